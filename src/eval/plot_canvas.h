#pragma once
// Drawing helpers shared by the evaluation plots: one drawing function renders both the PNG and
// the SVG, so the two files always show the same picture.
#include <cairo.h>

#include <functional>
#include <string>
#include <vector>

namespace kvsqueeze::eval::canvas {

constexpr int kWidth = 900;
constexpr int kHeight = 600;

struct Rgb {
  double r, g, b;
};
// A fixed qualitative palette (Tableau 10), cycled.
Rgb palette(size_t index);
void set_colour(cairo_t* cr, Rgb colour, double alpha = 1.0);

// Writes PATH.png and PATH.svg (width x height) with `draw`; throws kvsqueeze::Error on failure.
void render(const std::string& path, int width, int height, const std::function<void(cairo_t*)>& draw);

// "Nice" tick positions (1, 2, 2.5, 5 x 10^k steps) covering [lo, hi] with about `target` ticks.
std::vector<double> nice_ticks(double lo, double hi, int target);
// A tick value with just enough decimals for the step between ticks.
std::string format_tick(double value, double step);
// printf-style formatting of one number.
std::string format_number(const char* format, double value);

enum class Align { kStart, kCenter, kEnd };
// Text anchored at (x, y): horizontal alignment by `h`, vertical by `v` (kStart = top).
void draw_text(cairo_t* cr, const std::string& text, double x, double y, double size, Align h, Align v,
               bool bold = false, double angle = 0.0);
double text_width(cairo_t* cr, const std::string& text, double size, bool bold = false);
// `text`, cut in the middle with "..." to at most `max_width` (whole UTF-8 characters; press
// expressions differ at both ends).
std::string fit_text(cairo_t* cr, const std::string& text, double size, double max_width);

}  // namespace kvsqueeze::eval::canvas
