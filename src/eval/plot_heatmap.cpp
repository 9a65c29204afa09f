// Heat map in the style of needle-in-a-haystack plots: depth down, context length across,
// red (0) -> yellow -> green (max), the value printed in each cell, a colour bar on the right.
#include <algorithm>
#include <cmath>
#include <numbers>

#include "eval/plot_canvas.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/report.h"

namespace kvsqueeze::eval {
namespace {

using canvas::Align;
using canvas::Rgb;

// The colours of the usual NIAH pictures (gkamradt/LLMTest_NeedleInAHaystack).
constexpr Rgb kLow{0xF0 / 255.0, 0x49 / 255.0, 0x6E / 255.0};
constexpr Rgb kMid{0xEB / 255.0, 0xB8 / 255.0, 0x39 / 255.0};
constexpr Rgb kHigh{0x0C / 255.0, 0xD7 / 255.0, 0x9F / 255.0};
constexpr Rgb kNoData{0.82, 0.82, 0.82};

Rgb mix(Rgb a, Rgb b, double t) { return {a.r + (b.r - a.r) * t, a.g + (b.g - a.g) * t, a.b + (b.b - a.b) * t}; }

Rgb scale_colour(double value, double vmin, double vmax) {
  if (!std::isfinite(value)) return kNoData;
  double t = std::clamp((value - vmin) / (vmax - vmin), 0.0, 1.0);
  return t < 0.5 ? mix(kLow, kMid, t * 2) : mix(kMid, kHigh, t * 2 - 1);
}

}  // namespace

void plot_heatmap(const std::string& path, const std::string& title, const std::vector<std::string>& x_labels,
                  const std::vector<std::string>& y_labels, const std::vector<std::vector<double>>& values, double vmin,
                  double vmax, const std::string& x_title, const std::string& y_title) {
  if (values.size() != y_labels.size())
    throw Error("heat map " + path + ": " + std::to_string(values.size()) + " rows of values but " +
                std::to_string(y_labels.size()) + " y labels (they must match)");
  for (size_t r = 0; r < values.size(); ++r)
    if (values[r].size() != x_labels.size())
      throw Error("heat map " + path + ": row " + std::to_string(r) + " has " + std::to_string(values[r].size()) +
                  " values but there are " + std::to_string(x_labels.size()) + " x labels (they must match)");
  if (!(vmax > vmin) || !std::isfinite(vmin) || !std::isfinite(vmax))
    throw Error("heat map " + path + ": colour scale [" + std::to_string(vmin) + ", " + std::to_string(vmax) +
                "] is empty (vmax must exceed vmin)");

  canvas::render(path, canvas::kWidth, canvas::kHeight, [&](cairo_t* cr) {
    const double width = canvas::kWidth, height = canvas::kHeight;
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);

    double y_label_width = 0;
    for (const std::string& label : y_labels) y_label_width = std::max(y_label_width, canvas::text_width(cr, label, 13));
    const double left = 50 + y_label_width, right = width - 110, top = 60, bottom = height - 75;
    const size_t rows = y_labels.size(), cols = x_labels.size();
    const double cell_w = cols ? (right - left) / cols : 0, cell_h = rows ? (bottom - top) / rows : 0;

    // Cells, with the value printed where it fits.
    const double value_size = std::min({14.0, cell_h * 0.45, cell_w * 0.3});
    for (size_t r = 0; r < rows; ++r) {
      for (size_t c = 0; c < cols; ++c) {
        const double x = left + c * cell_w, y = top + r * cell_h;
        canvas::set_colour(cr, scale_colour(values[r][c], vmin, vmax));
        cairo_rectangle(cr, x, y, cell_w, cell_h);
        cairo_fill_preserve(cr);
        cairo_set_source_rgb(cr, 1, 1, 1);
        cairo_set_line_width(cr, 1);
        cairo_stroke(cr);
        if (value_size >= 7 && std::isfinite(values[r][c])) {
          cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
          canvas::draw_text(cr, canvas::format_number("%.0f", values[r][c]), x + cell_w / 2, y + cell_h / 2, value_size,
                            Align::kCenter, Align::kCenter);
        }
      }
    }

    // Column labels (turned when they do not fit their cell) and row labels.
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    double widest_x_label = 0;
    for (const std::string& label : x_labels) widest_x_label = std::max(widest_x_label, canvas::text_width(cr, label, 13));
    const bool turn = widest_x_label > cell_w - 4;
    for (size_t c = 0; c < cols; ++c) {
      const double x = left + (c + 0.5) * cell_w;
      if (turn) canvas::draw_text(cr, x_labels[c], x, bottom + 6, 13, Align::kEnd, Align::kCenter, false, -std::numbers::pi / 4);
      else canvas::draw_text(cr, x_labels[c], x, bottom + 6, 13, Align::kCenter, Align::kStart);
    }
    for (size_t r = 0; r < rows; ++r)
      canvas::draw_text(cr, y_labels[r], left - 8, top + (r + 0.5) * cell_h, 13, Align::kEnd, Align::kCenter);

    canvas::draw_text(cr, title, width / 2, 20, 18, Align::kCenter, Align::kStart, true);
    canvas::draw_text(cr, x_title, (left + right) / 2, height - 12, 14, Align::kCenter, Align::kEnd);
    canvas::draw_text(cr, y_title, 18, (top + bottom) / 2, 14, Align::kCenter, Align::kCenter, false, -std::numbers::pi / 2);

    // Colour bar: the same three stops as the cells, linear in between.
    const double bar_left = right + 25, bar_width = 20;
    cairo_pattern_t* gradient = cairo_pattern_create_linear(0, bottom, 0, top);
    for (auto [offset, colour] : {std::pair{0.0, kLow}, std::pair{0.5, kMid}, std::pair{1.0, kHigh}})
      cairo_pattern_add_color_stop_rgb(gradient, offset, colour.r, colour.g, colour.b);
    cairo_rectangle(cr, bar_left, top, bar_width, bottom - top);
    cairo_set_source(cr, gradient);
    cairo_fill(cr);
    cairo_pattern_destroy(gradient);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, bar_left + 0.5, top + 0.5, bar_width, bottom - top);
    cairo_stroke(cr);
    std::vector<double> ticks = canvas::nice_ticks(vmin, vmax, 5);
    const double step = ticks.size() > 1 ? ticks[1] - ticks[0] : vmax - vmin;
    for (double t : ticks) {
      const double y = bottom - (t - vmin) / (vmax - vmin) * (bottom - top);
      cairo_move_to(cr, bar_left + bar_width, y);
      cairo_line_to(cr, bar_left + bar_width + 5, y);
      cairo_stroke(cr);
      canvas::draw_text(cr, canvas::format_tick(t, step), bar_left + bar_width + 8, y, 12, Align::kStart, Align::kCenter);
    }
  });
}

}  // namespace kvsqueeze::eval
