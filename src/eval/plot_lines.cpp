// Line plot in the style of the kvpress leaderboard: one coloured line with markers per press,
// the uncompressed baseline as a dashed horizontal line, the legend to the right.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <numbers>

#include "eval/plot_canvas.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/report.h"

namespace kvsqueeze::eval {
namespace {

using canvas::Align;

struct Range {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    if (!std::isfinite(v)) return;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool empty() const { return !(hi >= lo); }
};

// Widens a range to nice tick bounds with a little room, and gives flat or empty ranges a size.
std::vector<double> axis_ticks(Range& range, double fallback_lo, double fallback_hi) {
  if (range.empty()) range = {fallback_lo, fallback_hi};
  if (range.hi - range.lo < 1e-12) {
    double pad = std::max(std::abs(range.lo) * 0.1, 1e-3);
    range = {range.lo - pad, range.hi + pad};
  }
  std::vector<double> ticks = canvas::nice_ticks(range.lo, range.hi, 6);
  double step = ticks.size() > 1 ? ticks[1] - ticks[0] : (range.hi - range.lo);
  if (ticks.front() > range.lo + 1e-12) ticks.insert(ticks.begin(), ticks.front() - step);
  if (ticks.back() < range.hi - 1e-12) ticks.push_back(ticks.back() + step);
  range = {ticks.front(), ticks.back()};
  return ticks;
}

void draw_marker(cairo_t* cr, int shape, double x, double y, double r) {
  switch (shape % 4) {
    case 0: cairo_arc(cr, x, y, r, 0, 2 * std::numbers::pi); break;
    case 1: cairo_rectangle(cr, x - r, y - r, 2 * r, 2 * r); break;
    case 2:
      cairo_move_to(cr, x, y - r * 1.2);
      cairo_line_to(cr, x + r * 1.1, y + r * 0.8);
      cairo_line_to(cr, x - r * 1.1, y + r * 0.8);
      cairo_close_path(cr);
      break;
    default:
      cairo_move_to(cr, x, y - r * 1.3);
      cairo_line_to(cr, x + r * 1.1, y);
      cairo_line_to(cr, x, y + r * 1.3);
      cairo_line_to(cr, x - r * 1.1, y);
      cairo_close_path(cr);
  }
  cairo_fill(cr);
}

struct Style {
  canvas::Rgb colour;
  int marker;
  bool dashed;
};

void set_line_style(cairo_t* cr, const Style& style, double width) {
  canvas::set_colour(cr, style.colour);
  cairo_set_line_width(cr, width);
  static const double dashes[] = {8.0, 5.0};
  cairo_set_dash(cr, dashes, style.dashed ? 2 : 0, 0);
}

// A legend label that does not fit loses its option names first ("pyramid_merge(
// initial_local_window=256,seq_pooling_type=best)" -> "pyramid_merge(256,best)"): the values are
// what tells a grid's lines apart.
std::string without_option_names(const std::string& label) {
  std::string out;
  size_t i = 0;
  while (i < label.size()) {
    out += label[i];
    if (label[i] == '(' || label[i] == ',') {
      size_t j = i + 1;
      while (j < label.size() && (std::isalnum(static_cast<unsigned char>(label[j])) || label[j] == '_' || label[j] == '.')) ++j;
      if (j < label.size() && j > i + 1 && label[j] == '=') i = j;  // skip "name=" (the '=' too)
    }
    ++i;
  }
  return out;
}

}  // namespace

void plot_lines(const std::string& path, const std::string& title, const std::string& x_label, const std::string& y_label,
                const std::vector<Series>& series) {
  Range x_range, y_range;
  std::vector<Style> styles;
  size_t line_index = 0, level_index = 0;
  for (const Series& s : series) {
    if (s.x.size() != s.y.size() && !s.horizontal)
      throw Error("plot " + path + ": series '" + s.label + "' has " + std::to_string(s.x.size()) + " x values but " +
                  std::to_string(s.y.size()) + " y values (they must match)");
    if (s.horizontal && s.y.empty()) throw Error("plot " + path + ": horizontal series '" + s.label + "' needs a y value");
    if (s.horizontal) {
      y_range.add(s.y[0]);
      // Reference levels in near-black (a second one in grey), always dashed.
      styles.push_back({level_index++ == 0 ? canvas::Rgb{0.15, 0.15, 0.15} : canvas::Rgb{0.5, 0.5, 0.5}, 0, true});
    } else {
      for (size_t i = 0; i < s.x.size(); ++i) {
        if (!std::isfinite(s.y[i])) continue;
        x_range.add(s.x[i]);
        y_range.add(s.y[i]);
      }
      // After the palette's ten colours, the next ten differ by marker shape.
      styles.push_back({canvas::palette(line_index), static_cast<int>(line_index / 10), false});
      ++line_index;
    }
  }

  canvas::render(path, canvas::kWidth, canvas::kHeight, [&](cairo_t* cr) {
    const double width = canvas::kWidth, height = canvas::kHeight;
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);

    // Legend width from the longest label (capped so the plot keeps most of the picture).
    double legend_text = 0;
    constexpr double kMaxLabelWidth = 260;
    for (const Series& s : series) legend_text = std::max(legend_text, canvas::text_width(cr, s.label, 13));
    const double legend_width = series.empty() ? 0 : std::min(kMaxLabelWidth, legend_text) + 50;
    const double left = 85, right = width - 25 - legend_width, top = 60, bottom = height - 65;

    Range xr = x_range, yr = y_range;
    std::vector<double> x_ticks = axis_ticks(xr, 0, 1);
    std::vector<double> y_ticks = axis_ticks(yr, 0, 1);
    auto px = [&](double x) { return left + (x - xr.lo) / (xr.hi - xr.lo) * (right - left); };
    auto py = [&](double y) { return bottom - (y - yr.lo) / (yr.hi - yr.lo) * (bottom - top); };

    // Grid and ticks.
    cairo_set_line_width(cr, 1);
    const double x_step = x_ticks.size() > 1 ? x_ticks[1] - x_ticks[0] : 1;
    const double y_step = y_ticks.size() > 1 ? y_ticks[1] - y_ticks[0] : 1;
    for (double t : x_ticks) {
      cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
      cairo_move_to(cr, std::round(px(t)) + 0.5, top);
      cairo_line_to(cr, std::round(px(t)) + 0.5, bottom);
      cairo_stroke(cr);
      cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
      cairo_move_to(cr, std::round(px(t)) + 0.5, bottom);
      cairo_line_to(cr, std::round(px(t)) + 0.5, bottom + 5);
      cairo_stroke(cr);
      canvas::draw_text(cr, canvas::format_tick(t, x_step), px(t), bottom + 8, 13, Align::kCenter, Align::kStart);
    }
    for (double t : y_ticks) {
      cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
      cairo_move_to(cr, left, std::round(py(t)) + 0.5);
      cairo_line_to(cr, right, std::round(py(t)) + 0.5);
      cairo_stroke(cr);
      cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
      cairo_move_to(cr, left - 5, std::round(py(t)) + 0.5);
      cairo_line_to(cr, left, std::round(py(t)) + 0.5);
      cairo_stroke(cr);
      canvas::draw_text(cr, canvas::format_tick(t, y_step), left - 8, py(t), 13, Align::kEnd, Align::kCenter);
    }
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_rectangle(cr, left + 0.5, top + 0.5, right - left, bottom - top);
    cairo_stroke(cr);

    cairo_set_source_rgb(cr, 0, 0, 0);
    canvas::draw_text(cr, title, (left + right) / 2, 20, 18, Align::kCenter, Align::kStart, true);
    canvas::draw_text(cr, x_label, (left + right) / 2, height - 15, 14, Align::kCenter, Align::kEnd);
    canvas::draw_text(cr, y_label, 22, (top + bottom) / 2, 14, Align::kCenter, Align::kCenter, false, -std::numbers::pi / 2);

    // Data, clipped to the plot area widened by a marker (a point on the frame stays whole).
    cairo_save(cr);
    cairo_rectangle(cr, left - 6, top - 6, right - left + 12, bottom - top + 12);
    cairo_clip(cr);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    for (size_t k = 0; k < series.size(); ++k) {
      const Series& s = series[k];
      set_line_style(cr, styles[k], 2.5);
      if (s.horizontal) {
        cairo_move_to(cr, left, py(s.y[0]));
        cairo_line_to(cr, right, py(s.y[0]));
        cairo_stroke(cr);
        continue;
      }
      // Points in x order; a NaN y breaks the line.
      std::vector<size_t> order(s.x.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return s.x[a] < s.x[b]; });
      bool pen_down = false;
      for (size_t i : order) {
        if (!std::isfinite(s.y[i]) || !std::isfinite(s.x[i])) {
          pen_down = false;
          continue;
        }
        if (pen_down) cairo_line_to(cr, px(s.x[i]), py(s.y[i]));
        else cairo_move_to(cr, px(s.x[i]), py(s.y[i]));
        pen_down = true;
      }
      cairo_stroke(cr);
      for (size_t i : order)
        if (std::isfinite(s.y[i]) && std::isfinite(s.x[i])) draw_marker(cr, styles[k].marker, px(s.x[i]), py(s.y[i]), 4.5);
    }
    cairo_restore(cr);

    // Legend.
    const double legend_x = right + 20;
    double legend_y = top + 4;
    for (size_t k = 0; k < series.size(); ++k) {
      set_line_style(cr, styles[k], 2.5);
      cairo_move_to(cr, legend_x, legend_y + 9);
      cairo_line_to(cr, legend_x + 28, legend_y + 9);
      cairo_stroke(cr);
      if (!series[k].horizontal) draw_marker(cr, styles[k].marker, legend_x + 14, legend_y + 9, 4.5);
      cairo_set_source_rgb(cr, 0, 0, 0);
      std::string label = series[k].label;
      if (canvas::text_width(cr, label, 13) > kMaxLabelWidth) label = without_option_names(label);
      canvas::draw_text(cr, canvas::fit_text(cr, label, 13, kMaxLabelWidth), legend_x + 36, legend_y + 9, 13,
                        Align::kStart, Align::kCenter);
      legend_y += 22;
    }
  });
}

}  // namespace kvsqueeze::eval
