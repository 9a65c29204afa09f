#include "eval/plot_canvas.h"

#include <cairo-svg.h>
#include <fontconfig/fontconfig.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "kvsqueeze/error.h"

namespace kvsqueeze::eval::canvas {
namespace {

constexpr const char* kFont = "DejaVu Sans";  // falls back through fontconfig when absent

void select_font(cairo_t* cr, double size, bool bold) {
  cairo_select_font_face(cr, kFont, CAIRO_FONT_SLANT_NORMAL, bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
}

// cairo and fontconfig keep fonts in process-wide caches that they never free; LeakSanitizer
// (scripts/test.sh runs tests and the CLI with detect_leaks=1) reports them as leaks. Released
// at exit, after every picture is written (nothing else in kvsqueeze uses cairo).
struct FontCachesReleasedAtExit {
  ~FontCachesReleasedAtExit() {
    cairo_debug_reset_static_data();
    FcFini();
  }
};

void check(cairo_status_t status, const std::string& what, const std::string& file) {
  if (status != CAIRO_STATUS_SUCCESS)
    throw Error("cannot write plot " + file + " (" + what + ": " + cairo_status_to_string(status) + ")");
}

}  // namespace

Rgb palette(size_t index) {
  static const Rgb colours[] = {
      {0x4E / 255.0, 0x79 / 255.0, 0xA7 / 255.0}, {0xF2 / 255.0, 0x8E / 255.0, 0x2B / 255.0},
      {0xE1 / 255.0, 0x57 / 255.0, 0x59 / 255.0}, {0x76 / 255.0, 0xB7 / 255.0, 0xB2 / 255.0},
      {0x59 / 255.0, 0xA1 / 255.0, 0x4F / 255.0}, {0xED / 255.0, 0xC9 / 255.0, 0x48 / 255.0},
      {0xB0 / 255.0, 0x7A / 255.0, 0xA1 / 255.0}, {0xFF / 255.0, 0x9D / 255.0, 0xA7 / 255.0},
      {0x9C / 255.0, 0x75 / 255.0, 0x5F / 255.0}, {0xBA / 255.0, 0xB0 / 255.0, 0xAC / 255.0},
  };
  return colours[index % (sizeof(colours) / sizeof(colours[0]))];
}

void set_colour(cairo_t* cr, Rgb colour, double alpha) { cairo_set_source_rgba(cr, colour.r, colour.g, colour.b, alpha); }

void render(const std::string& path, int width, int height, const std::function<void(cairo_t*)>& draw) {
  static FontCachesReleasedAtExit release_at_exit;  // constructed once, destroyed at exit
  const std::string png_path = path + ".png";
  cairo_surface_t* image = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, width, height);
  cairo_t* cr = cairo_create(image);
  draw(cr);
  cairo_status_t draw_status = cairo_status(cr);
  cairo_destroy(cr);
  cairo_status_t write_status = draw_status == CAIRO_STATUS_SUCCESS ? cairo_surface_write_to_png(image, png_path.c_str())
                                                                    : draw_status;
  cairo_surface_destroy(image);
  check(draw_status, "drawing", png_path);
  check(write_status, "writing the PNG", png_path);

  const std::string svg_path = path + ".svg";
  cairo_surface_t* svg = cairo_svg_surface_create(svg_path.c_str(), width, height);
  cr = cairo_create(svg);
  draw(cr);
  draw_status = cairo_status(cr);
  cairo_destroy(cr);
  cairo_surface_finish(svg);  // the file is complete only after finish
  write_status = cairo_surface_status(svg);
  cairo_surface_destroy(svg);
  check(draw_status, "drawing", svg_path);
  check(write_status, "writing the SVG", svg_path);
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo)) return {lo};
  const double raw_step = (hi - lo) / std::max(1, target);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw_step)));
  double step = magnitude;
  for (double factor : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    step = factor * magnitude;
    if (step >= raw_step) break;
  }
  std::vector<double> ticks;
  const double first = std::ceil(lo / step - 1e-9) * step;
  for (double t = first; t <= hi + step * 1e-9; t += step) ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  return ticks;
}

std::string format_tick(double value, double step) {
  int decimals = 0;
  if (step > 0 && step < 1) decimals = std::min(6, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
  if (step > 0 && decimals < 6 && std::abs(step * std::pow(10.0, decimals) - std::round(step * std::pow(10.0, decimals))) > 1e-6)
    ++decimals;  // steps such as 0.25
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
  return buffer;
}

std::string format_number(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, format, value);
  return buffer;
}

double text_width(cairo_t* cr, const std::string& text, double size, bool bold) {
  select_font(cr, size, bold);
  cairo_text_extents_t extents;
  cairo_text_extents(cr, text.c_str(), &extents);
  return extents.x_advance;
}

std::string fit_text(cairo_t* cr, const std::string& text, double size, double max_width) {
  if (text_width(cr, text, size) <= max_width) return text;
  // Press expressions differ at both ends (the press, its last option): cut from the middle,
  // whole UTF-8 characters (a first byte with its 10xxxxxx continuation bytes) at a time.
  std::vector<std::string> chars;
  for (unsigned char c : text) {
    if (chars.empty() || (c & 0xC0) != 0x80) chars.emplace_back();
    chars.back() += static_cast<char>(c);
  }
  size_t head = 0, tail = 0;  // characters kept from the start and from the end
  auto join = [&](size_t h, size_t t) {
    std::string out;
    for (size_t i = 0; i < h; ++i) out += chars[i];
    out += "...";
    for (size_t i = chars.size() - t; i < chars.size(); ++i) out += chars[i];
    return out;
  };
  // Grow the kept ends, 2 characters of head for every 3 of tail, while they fit.
  while (head + tail < chars.size()) {
    const bool grow_head = 3 * head < 2 * tail;
    const size_t h = head + (grow_head ? 1 : 0), t = tail + (grow_head ? 0 : 1);
    if (text_width(cr, join(h, t), size) > max_width) break;
    head = h, tail = t;
  }
  return join(head, tail);
}

void draw_text(cairo_t* cr, const std::string& text, double x, double y, double size, Align h, Align v, bool bold,
               double angle) {
  select_font(cr, size, bold);
  cairo_text_extents_t extents;
  cairo_text_extents(cr, text.c_str(), &extents);
  cairo_font_extents_t font;
  cairo_font_extents(cr, &font);
  double dx = h == Align::kStart ? 0 : h == Align::kCenter ? -extents.x_advance / 2 : -extents.x_advance;
  // Vertical placement from the font's ascent/descent so that labels line up whatever their letters.
  double dy = v == Align::kStart ? font.ascent : v == Align::kCenter ? (font.ascent - font.descent) / 2 : -font.descent;
  cairo_save(cr);
  cairo_translate(cr, x, y);
  cairo_rotate(cr, angle);
  cairo_move_to(cr, dx, dy);
  cairo_show_text(cr, text.c_str());
  cairo_restore(cr);
}

}  // namespace kvsqueeze::eval::canvas
