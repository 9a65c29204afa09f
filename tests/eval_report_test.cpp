// results.jsonl, the summary tables, the plots and the progress line of `kvsqueeze eval`.
#include <cairo.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>

#include "eval/summary.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/progress.h"
#include "kvsqueeze/eval/report.h"
#include "test_paths.h"

namespace fs = std::filesystem;
using kvsqueeze::eval::Progress;
using nlohmann::json;

namespace {

// A fresh directory per test (tests of several processes may run at once), removed afterwards
// unless KVSQ_KEEP_TEST_FILES is set (to look at the pictures).
struct ScratchDir {
  fs::path path;
  explicit ScratchDir(const std::string& name)
      : path(fs::path(test_paths::scratch_dir()) / ("eval-report-" + name + test_paths::process_tag())) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ignored;
    if (!std::getenv("KVSQ_KEEP_TEST_FILES")) fs::remove_all(path, ignored);
  }
};

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const kvsqueeze::Error& e) {
    return e.what();
  }
  return "(no kvsqueeze::Error thrown)";
}

json result(const std::string& kind, const std::string& task, const std::string& press, double ratio, double score) {
  return {{"kind", kind}, {"task", task}, {"sample_id", "s"}, {"press", press}, {"ratio", ratio}, {"score", score}};
}

// A decoded PNG; pixel() gives 0..255 channels (the plots are opaque, so no premultiplication shows).
struct Image {
  cairo_surface_t* surface = nullptr;
  explicit Image(const fs::path& path) : surface(cairo_image_surface_create_from_png(path.c_str())) {}
  ~Image() { cairo_surface_destroy(surface); }
  bool ok() const { return cairo_surface_status(surface) == CAIRO_STATUS_SUCCESS; }
  int width() const { return cairo_image_surface_get_width(surface); }
  int height() const { return cairo_image_surface_get_height(surface); }
  struct Rgb {
    int r, g, b;
  };
  Rgb pixel(int x, int y) const {
    cairo_surface_flush(surface);
    const unsigned char* data = cairo_image_surface_get_data(surface);
    const int stride = cairo_image_surface_get_stride(surface);
    uint32_t argb;
    std::memcpy(&argb, data + y * stride + x * 4, 4);  // native-endian ARGB32
    return {static_cast<int>((argb >> 16) & 0xFF), static_cast<int>((argb >> 8) & 0xFF), static_cast<int>(argb & 0xFF)};
  }
  // Pixels of exactly this colour.
  int count(Rgb colour) const {
    int n = 0;
    for (int y = 0; y < height(); ++y)
      for (int x = 0; x < width(); ++x) {
        Rgb p = pixel(x, y);
        n += p.r == colour.r && p.g == colour.g && p.b == colour.b;
      }
    return n;
  }
};

long newlines(const std::string& text) { return std::count(text.begin(), text.end(), '\n'); }

bool has_png_signature(const fs::path& path) {
  const std::string bytes = read_text(path).substr(0, 8);
  return bytes == std::string("\x89PNG\r\n\x1a\n", 8);
}

// cairo writes text into SVG as glyph outlines placed with <use xlink:href="#glyph...">, one per character drawn.
size_t glyph_uses(const std::string& svg) {
  size_t n = 0;
  for (size_t pos = svg.find("#glyph"); pos != std::string::npos; pos = svg.find("#glyph", pos + 1)) ++n;
  return n;
}

// ---------------------------------------------------------------------------------------------
// results.jsonl

TEST(EvalResultsLog, AppendThenReadRoundTrips) {
  ScratchDir scratch("roundtrip");
  const fs::path path = scratch.path / "results.jsonl";
  EXPECT_TRUE(kvsqueeze::eval::read_results(path.string()).empty());  // no file yet: nothing run
  json first = result("ruler", "ruler/vt", "snapkv", 0.5, 0.75);
  first["metrics"] = {{"top1", 0.5}};
  first["meta"] = {{"depth", 25}};
  json second = result("niah", "niah", "none", 0, 1.0);
  second["prediction"] = "caf\xC3";  // generation stopped inside a UTF-8 character
  kvsqueeze::eval::append_result(path.string(), first);
  kvsqueeze::eval::append_result(path.string(), second);

  const std::string text = read_text(path);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);  // one line each, newline-terminated
  auto back = kvsqueeze::eval::read_results(path.string());
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0], first);
  EXPECT_EQ(back[1]["prediction"], "caf\xEF\xBF\xBD");  // the broken byte became U+FFFD
  EXPECT_EQ(back[1]["score"], 1.0);
}

TEST(EvalResultsLog, TruncatedLastLineIsIgnoredAndReplacedOnAppend) {
  ScratchDir scratch("truncated");
  const fs::path path = scratch.path / "results.jsonl";
  const std::string good = result("ruler", "ruler/vt", "knorm", 0.25, 1.0).dump() + "\n";
  write_text(path, good + good + R"({"kind": "ruler", "task": "rul)");  // interrupted mid-write
  EXPECT_EQ(kvsqueeze::eval::read_results(path.string()).size(), 2u);

  // Resuming appends the next result: the partial line must not glue onto it.
  kvsqueeze::eval::append_result(path.string(), result("ruler", "ruler/vt", "knorm", 0.5, 0.0));
  auto back = kvsqueeze::eval::read_results(path.string());
  ASSERT_EQ(back.size(), 3u);
  EXPECT_EQ(back[2]["ratio"], 0.5);
  EXPECT_EQ(read_text(path).find("\"rul\""), std::string::npos);
}

TEST(EvalResultsLog, CompleteLastLineWithoutNewlineIsKept) {
  ScratchDir scratch("nonewline");
  const fs::path path = scratch.path / "results.jsonl";
  write_text(path, result("kld", "kld", "knorm", 0.5, 0.1).dump());  // complete, no '\n' (hand-edited)
  EXPECT_EQ(kvsqueeze::eval::read_results(path.string()).size(), 1u);
  kvsqueeze::eval::append_result(path.string(), result("kld", "kld", "knorm", 0.75, 0.2));
  auto back = kvsqueeze::eval::read_results(path.string());
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0]["ratio"], 0.5);
  EXPECT_EQ(back[1]["ratio"], 0.75);
}

TEST(EvalResultsLog, MalformedMiddleLineNamesItsLineNumber) {
  ScratchDir scratch("malformed");
  const fs::path path = scratch.path / "results.jsonl";
  const std::string good = result("ruler", "ruler/vt", "knorm", 0.25, 1.0).dump() + "\n";
  write_text(path, good + "\n" + "{\"kind\": oops}\n" + good);  // line 2 is blank, line 3 broken
  std::string message = error_of([&] { kvsqueeze::eval::read_results(path.string()); });
  EXPECT_NE(message.find("line 3"), std::string::npos) << message;
  EXPECT_NE(message.find(path.string()), std::string::npos) << message;
  EXPECT_NE(message.find("not valid JSON"), std::string::npos) << message;

  write_text(path, good + "[1, 2]\n" + good);
  message = error_of([&] { kvsqueeze::eval::read_results(path.string()); });
  EXPECT_NE(message.find("line 2"), std::string::npos) << message;
  EXPECT_NE(message.find("not an object"), std::string::npos) << message;

  // A complete last line of the wrong type is damage, not an interrupted write.
  write_text(path, good + "[1, 2]");
  message = error_of([&] { kvsqueeze::eval::read_results(path.string()); });
  EXPECT_NE(message.find("line 2"), std::string::npos) << message;
}

// ---------------------------------------------------------------------------------------------
// Summary tables

// Hand-made results. Expected numbers, by hand:
//  ruler/a none     : scores 1, 0.5          -> mean 0.75 -> 75.00, n 2; kv held 2 MiB and 4 MiB -> 3.00; achieved 0
//  ruler/b none     : scores 1, 1            -> 100.00, n 2 (ratio 0.5 in the file: the baseline shows at 0)
//  ruler/a snapkv .5: scores 0.5, 0, 0.25    -> 0.25 -> 25.00, n 3; kv 1 MiB each -> 1.00; achieved .5,.48,.52 -> 0.5000
//  ruler/b snapkv .5: score 1                -> 100.00, n 1 (no kv fields: empty cells)
//  ruler/a "snapkv [window=64]" .5: score 1  -> 100.00 (options make it another configuration)
//  mean over tasks, snapkv .5: (25 + 100) / 2 = 62.50 (not the per-sample mean 1.75/4 = 43.75), n 4, 2 tasks,
//                              kv held: only ruler/a has it -> 1.00, achieved 0.5000
//  mean over tasks, none: (75 + 100) / 2 = 87.50, n 4; kv held 3.00 (ruler/a only)
//  kld knorm .5: KL scores 0.1, 0.3 -> 0.2 nats; top1 0.9, 0.7 -> 80.00 %; ppl_ratio 1.1, 1.3 -> 1.2000
// 95% intervals (half-widths), by hand: t(0.975; 1) = 12.706, t(0.975; 2) = 4.303;
//  ruler/a none: s = 35.355, se = 25       -> 12.706 * 25 = 317.65
//  ruler/b none: s = 0                     -> 0.00
//  ruler/a snapkv: s = 25, se = 14.434     -> 4.303 * 14.434 = 62.11
//  ruler/b snapkv, with options: n = 1     -> none (empty)
//  mean over tasks, none: 1.96 * sqrt(25^2 + 0^2) / 2 = 24.50; snapkv: ruler/b has 1 sample -> none
//  kld knorm: s = 0.141421, se = 0.1       -> 12.706 * 0.1 = 1.27
std::vector<json> hand_made_results() {
  std::vector<json> results;
  auto add = [&](json r, double kv_held, double achieved) {
    if (!std::isnan(kv_held)) r["kv_bytes_held"] = kv_held;
    if (!std::isnan(achieved)) r["achieved_ratio"] = achieved;
    results.push_back(r);
  };
  const double none = std::numeric_limits<double>::quiet_NaN();
  add(result("ruler", "ruler/a", "none", 0, 1.0), 2 * 1048576.0, 0);
  add(result("ruler", "ruler/a", "none", 0, 0.5), 4 * 1048576.0, 0);
  add(result("ruler", "ruler/b", "none", 0.5, 1.0), none, none);
  add(result("ruler", "ruler/b", "none", 0.5, 1.0), none, none);
  add(result("ruler", "ruler/a", "snapkv", 0.5, 0.5), 1048576.0, 0.5);
  add(result("ruler", "ruler/a", "snapkv", 0.5, 0.0), 1048576.0, 0.48);
  add(result("ruler", "ruler/a", "snapkv", 0.5, 0.25), 1048576.0, 0.52);
  add(result("ruler", "ruler/b", "snapkv", 0.5, 1.0), none, none);
  json with_options = result("ruler", "ruler/a", "snapkv", 0.5, 1.0);
  with_options["press_opts"] = {"window=64"};
  add(with_options, none, none);
  json kl1 = result("kld", "kld", "knorm", 0.5, 0.1), kl2 = result("kld", "kld", "knorm", 0.5, 0.3);
  kl1["metrics"] = {{"top1", 0.9}, {"ppl_ratio", 1.1}};
  kl2["metrics"] = {{"top1", 0.7}, {"ppl_ratio", 1.3}};
  add(kl1, none, none);
  add(kl2, none, none);
  return results;
}

TEST(EvalReportSummary, CsvHoldsHandComputedMeans) {
  ScratchDir scratch("csv");
  const fs::path dir = scratch.path;
  auto files = kvsqueeze::eval::write_report(hand_made_results(), dir.string());
  const std::string csv = read_text(dir / "summary.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "kind,task,press,ratio,n,tasks,score,score_ci95,kl,top1,ppl_ratio,kv_held_mib,achieved_ratio");
  for (const char* line : {
           "ruler,ruler/a,none,0,2,1,75.00,317.65,,,,3.00,0.0000\n",
           "ruler,ruler/b,none,0,2,1,100.00,0.00,,,,,\n",
           "ruler,ruler/a,snapkv,0.5,3,1,25.00,62.11,,,,1.00,0.5000\n",
           "ruler,ruler/b,snapkv,0.5,1,1,100.00,,,,,,\n",
           "ruler,ruler/a,snapkv [window=64],0.5,1,1,100.00,,,,,,\n",
           "ruler,mean over tasks,snapkv,0.5,4,2,62.50,,,,,1.00,0.5000\n",
           "ruler,mean over tasks,none,0,4,2,87.50,24.50,,,,3.00,0.0000\n",
           "kld,kld,knorm,0.5,2,1,0.2,1.27,,80.00,1.2000,,\n",
       })
    EXPECT_NE(csv.find(line), std::string::npos) << "missing " << line << "in\n" << csv;
  // The baseline comes before the presses of its task.
  EXPECT_LT(csv.find("ruler,ruler/a,none"), csv.find("ruler,ruler/a,snapkv"));
}

TEST(EvalReportSummary, MarkdownTablesPerKind) {
  ScratchDir scratch("markdown");
  const fs::path dir = scratch.path;
  kvsqueeze::eval::write_report(hand_made_results(), dir.string());
  const std::string md = read_text(dir / "summary.md");
  for (const char* text : {
           "## ruler\n",
           "| task | press | ratio | score | ±95% | n | KV held (MiB) | achieved ratio |\n",
           "| ruler/a | none | 0 | 75.00 | 317.65 | 2 | 3.00 | 0.0000 |\n",
           "| ruler/b | snapkv | 0.5 | 100.00 | – | 1 | – | – |\n",
           "### ruler: mean over tasks (2 tasks)\n",
           "| 2 | snapkv | 0.5 | 62.50 | – | 4 | 1.00 | 0.5000 |\n",
           "| 2 | none | 0 | 87.50 | 24.50 | 4 | 3.00 | 0.0000 |\n",
           "| none | 87.50 ± 24.50 | – |\n",
           "| knorm | 0.2 ± 1.27 |\n",
           "## kld\n",
           "| task | press | ratio | KL (nats) | ±95% | top-1 (%) | ppl ratio | n | KV held (MiB) | achieved ratio |\n",
           "| kld | knorm | 0.5 | 0.2 | 1.27 | 80.00 | 1.2000 | 2 | – | – |\n",
       })
    EXPECT_NE(md.find(text), std::string::npos) << "missing " << text << "in\n" << md;
}

TEST(EvalReportSummary, ReturnsEveryFileWrittenOnePlotPerKind) {
  ScratchDir scratch("files");
  const fs::path dir = scratch.path;
  auto files = kvsqueeze::eval::write_report(hand_made_results(), dir.string());
  std::vector<std::string> names;
  for (const std::string& file : files) {
    EXPECT_TRUE(fs::exists(file)) << file;
    names.push_back(fs::path(file).filename().string());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"score_vs_ratio_kld.png", "score_vs_ratio_kld.svg", "score_vs_ratio_ruler.png",
                                             "score_vs_ratio_ruler.svg", "summary.csv", "summary.md"}));
}

// Presses with their own budget rules (merging, allocators) compare at equal memory: a second
// plot against the bytes each cell held, drawn only when every compressed cell measured them.
TEST(EvalReportSummary, PlotsAgainstBytesHeldWhenEveryCellMeasuredThem) {
  ScratchDir scratch("held");
  std::vector<json> results;
  for (const std::string press : {"none", "snapkv", "pyramid_merge"})
    for (double ratio : {0.25, 0.5}) {
      json r = result("kld", "kld", press, press == "snapkv" ? ratio : 0.0, 0.1 * ratio);
      r["kv_bytes_held"] = (1.0 - ratio) * 1048576.0;
      r["achieved_ratio"] = ratio;
      if (press == "pyramid_merge") r["own_budget"] = true;
      results.push_back(r);
    }
  // A press that sets its own size is summarised at the grid's nominal ratio, flagged so that the
  // ratio plot places it at its achieved ratio (here the mean, 0.375).
  const auto summary = kvsqueeze::eval::summarise(results);
  int flagged = 0;
  for (const auto& row : summary.means)
    if (row.press == "pyramid_merge") {
      EXPECT_TRUE(row.own_budget);
      EXPECT_DOUBLE_EQ(row.achieved_ratio, 0.375);
      ++flagged;
    } else {
      EXPECT_FALSE(row.own_budget) << row.press;
    }
  EXPECT_EQ(flagged, 1);
  kvsqueeze::eval::write_report(results, scratch.path.string());
  EXPECT_TRUE(fs::exists(scratch.path / "score_vs_kv_held.png"));
  EXPECT_TRUE(fs::exists(scratch.path / "score_vs_kv_held.svg"));
  EXPECT_TRUE(fs::exists(scratch.path / "score_vs_ratio.png"));

  ScratchDir unmeasured("held_missing");
  results.back().erase("kv_bytes_held");
  results[results.size() - 2].erase("kv_bytes_held");
  kvsqueeze::eval::write_report(results, unmeasured.path.string());
  EXPECT_FALSE(fs::exists(unmeasured.path / "score_vs_kv_held.png"));
  EXPECT_TRUE(fs::exists(unmeasured.path / "score_vs_ratio.png"));
}

TEST(EvalReportSummary, BadResultsAreClearErrors) {
  ScratchDir scratch("bad");
  const fs::path dir = scratch.path;
  auto results = hand_made_results();
  results[1].erase("score");
  std::string message = error_of([&] { kvsqueeze::eval::write_report(results, dir.string()); });
  EXPECT_NE(message.find("result #2"), std::string::npos) << message;
  EXPECT_NE(message.find("\"score\" is missing"), std::string::npos) << message;

  results = hand_made_results();
  results[4]["ratio"] = "half";
  message = error_of([&] { kvsqueeze::eval::write_report(results, dir.string()); });
  EXPECT_NE(message.find("\"ratio\" is not a number"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir / "summary.csv"));  // validated before anything is written
}

// ---------------------------------------------------------------------------------------------
// Plots

TEST(EvalReportPlots, LinePlotPngAndSvg) {
  ScratchDir scratch("lines");
  const fs::path dir = scratch.path;
  using kvsqueeze::eval::Series;
  std::vector<Series> series = {
      {"snapkv", {0.25, 0.5, 0.75}, {80, 67, 40}},
      {"knorm", {0.25, 0.5, 0.75}, {74, 50, 29}},
      {"no compression", {0}, {95.4}, true},
  };
  kvsqueeze::eval::plot_lines((dir / "short").string(), "RULER", "compression ratio", "score", series);
  Image png(dir / "short.png");
  ASSERT_TRUE(has_png_signature(dir / "short.png"));
  ASSERT_TRUE(png.ok());
  EXPECT_EQ(png.width(), 900);
  EXPECT_EQ(png.height(), 600);
  // The first two palette colours (Tableau 10 blue #4E79A7 and orange #F28E2B) fill the markers.
  EXPECT_GT(png.count({0x4E, 0x79, 0xA7}), 50);
  EXPECT_GT(png.count({0xF2, 0x8E, 0x2B}), 50);

  const std::string svg = read_text(dir / "short.svg");
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("width=\"900"), std::string::npos);
  // Text is drawn as glyphs: a legend label 20 characters longer adds (about) 20 glyph uses.
  series[0].label = "snapkv with a longer name";
  kvsqueeze::eval::plot_lines((dir / "long").string(), "RULER", "compression ratio", "score", series);
  const size_t short_glyphs = glyph_uses(svg), long_glyphs = glyph_uses(read_text(dir / "long.svg"));
  EXPECT_GT(short_glyphs, 30u);  // title, axis labels, ticks and legend
  EXPECT_GE(long_glyphs, short_glyphs + 15) << short_glyphs << " vs " << long_glyphs;
}

TEST(EvalReportPlots, MismatchedSeriesIsAnError) {
  ScratchDir scratch("mismatch");
  const fs::path dir = scratch.path;
  std::string message = error_of([&] {
    kvsqueeze::eval::plot_lines((dir / "p").string(), "t", "x", "y", {{"snapkv", {0.25, 0.5}, {1.0}}});
  });
  EXPECT_NE(message.find("snapkv"), std::string::npos) << message;
}

TEST(EvalReportPlots, HeatmapColoursFollowValues) {
  ScratchDir scratch("heatmap");
  const fs::path dir = scratch.path;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // Row 0 (top): 0 and 100; row 1: NaN and 50.
  kvsqueeze::eval::plot_heatmap((dir / "h").string(), "NIAH", {"1024", "2048"}, {"0%", "100%"}, {{0, 100}, {nan, 50}}, 0,
                                100, "length", "depth");
  Image png(dir / "h.png");
  ASSERT_TRUE(png.ok());
  ASSERT_EQ(png.width(), 900);
  ASSERT_EQ(png.height(), 600);
  // The cells fill about x 90..790, y 60..525 (left column ends near x 440, top row near y 292);
  // sample away from the printed values in the cell centres.
  Image::Rgb low = png.pixel(150, 90), high = png.pixel(500, 90), missing = png.pixel(150, 480), middle = png.pixel(500, 480);
  EXPECT_GT(low.r, low.g + 60) << "0 should be red";
  EXPECT_GT(high.g, high.r + 60) << "100 should be green";
  EXPECT_GT(middle.r, middle.b + 60) << "50 should be yellow";
  EXPECT_GT(middle.g, middle.b + 60) << "50 should be yellow";
  EXPECT_LE(std::abs(missing.r - missing.g) + std::abs(missing.g - missing.b), 6) << "NaN should be grey";
  EXPECT_NE(read_text(dir / "h.svg").find("<svg"), std::string::npos);
}

TEST(EvalReportPlots, HeatmapShapeErrors) {
  ScratchDir scratch("heatmap-bad");
  const fs::path dir = scratch.path;
  std::string message = error_of([&] {
    kvsqueeze::eval::plot_heatmap((dir / "h").string(), "t", {"a", "b"}, {"r"}, {{1.0}}, 0, 100, "x", "y");
  });
  EXPECT_NE(message.find("row 0"), std::string::npos) << message;
  message = error_of([&] {
    kvsqueeze::eval::plot_heatmap((dir / "h").string(), "t", {"a"}, {"r"}, {{1.0}}, 100, 100, "x", "y");
  });
  EXPECT_NE(message.find("vmax"), std::string::npos) << message;
}

TEST(EvalReportPlots, NiahReportDrawsOneHeatmapPerPressAndRatio) {
  ScratchDir scratch("niah");
  const fs::path dir = scratch.path;
  std::vector<json> results;
  for (const std::string press : {"none", "chunk(snapkv,512)"})
    for (int depth : {0, 50})
      for (int length : {1024, 2048}) {
        json r = result("niah", "niah", press, 0.5, depth == 0 ? 1.0 : 0.0);
        r["meta"] = {{"depth", depth}, {"length", length}};
        results.push_back(r);
      }
  auto files = kvsqueeze::eval::write_report(results, dir.string());
  for (const char* name : {"niah_none_0.png", "niah_none_0.svg", "niah_chunk_snapkv_512_0.5.png",
                           "niah_chunk_snapkv_512_0.5.svg", "score_vs_ratio.png", "score_vs_ratio.svg"}) {
    EXPECT_TRUE(fs::exists(dir / name)) << name;
    EXPECT_NE(std::find(files.begin(), files.end(), (dir / name).string()), files.end()) << name;
  }
  // Depth 0 (the top row) scored 100, depth 50 scored 0: green above red.
  Image png(dir / "niah_chunk_snapkv_512_0.5.png");
  ASSERT_TRUE(png.ok());
  Image::Rgb top = png.pixel(150, 90), bottom = png.pixel(150, 480);
  EXPECT_GT(top.g, top.r + 60);
  EXPECT_GT(bottom.r, bottom.g + 60);
}

// ---------------------------------------------------------------------------------------------
// Progress

struct FakeClock {
  std::chrono::steady_clock::time_point now{};
  void wait(double seconds) {
    now += std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
  }
  Progress::Clock clock() {
    return [this] { return now; };
  }
};

// A fake clock and the stream a Progress under test writes to.
class EvalProgress : public testing::Test {
 protected:
  FakeClock clock;
  std::ostringstream out;
  // `seconds` later `n` more are done: the progress line then.
  std::string line_after(Progress& p, double seconds, int64_t n, const std::string& status = "") {
    clock.wait(seconds);
    p.advance(n, status);
    return p.line();
  }
};

TEST_F(EvalProgress, FormatDuration) {
  EXPECT_EQ(Progress::format_duration(23), "00:23");
  EXPECT_EQ(Progress::format_duration(12 * 60 + 5), "12:05");
  EXPECT_EQ(Progress::format_duration(3600 + 2 * 60 + 3), "1:02:03");
  EXPECT_EQ(Progress::format_duration(59.6), "01:00");
  EXPECT_EQ(Progress::format_duration(-1), "--:--");
  EXPECT_EQ(Progress::format_duration(std::numeric_limits<double>::infinity()), "--:--");
}

TEST_F(EvalProgress, LineWithRateAndEta) {
  Progress progress("ruler", 40, clock.clock(), out, false);
  EXPECT_EQ(progress.line(), "[ruler] 0/40 0% -- it/s ETA --:--");
  // 12 in 10 s = 1.2 it/s; 28 left / 1.2 = 23.3 s.
  EXPECT_EQ(line_after(progress, 10, 12, "snapkv 0.5"), "[ruler] 12/40 30% 1.2 it/s ETA 00:23 snapkv 0.5");
  // 40 in 60 s: done, the elapsed time replaces the ETA; the status stays.
  EXPECT_EQ(line_after(progress, 50, 28), "[ruler] 40/40 100% 1.5 s/it in 01:00 snapkv 0.5");
}

TEST_F(EvalProgress, SlowRateAndUnknownTotal) {
  Progress slow("kld", 10, clock.clock(), out, false);
  EXPECT_EQ(line_after(slow, 12, 3), "[kld] 3/10 30% 4.0 s/it ETA 00:28");  // 7 left x 4 s
  Progress open_ended("scan", 0, clock.clock(), out, false);
  EXPECT_EQ(line_after(open_ended, 2, 5), "[scan] 5 2.5 it/s");
}

TEST_F(EvalProgress, LogOutputIsThrottled) {
  {
    Progress progress("niah", 4, clock.clock(), out, false);
    clock.wait(1);
    progress.advance();  // 1 s since start: too soon
    EXPECT_EQ(out.str(), "");
    clock.wait(5);
    progress.advance();  // 6 s: printed
    EXPECT_EQ(out.str(), progress.line() + "\n");
    clock.wait(1);
    progress.advance();  // 1 s after the last line: quiet
    EXPECT_EQ(newlines(out.str()), 1);
    clock.wait(1);
    progress.advance();  // the end is always printed
    EXPECT_EQ(newlines(out.str()), 2);
  }
  EXPECT_EQ(newlines(out.str()), 2);  // no duplicate at destruction
  EXPECT_EQ(out.str().find('\r'), std::string::npos);

  std::ostringstream interrupted;
  {
    Progress progress("niah", 4, clock.clock(), interrupted, false);
    clock.wait(1);
    progress.advance();
  }
  EXPECT_EQ(interrupted.str().rfind("[niah] 1/4 25%", 0), 0u) << interrupted.str();  // the last state on the way out
}

TEST_F(EvalProgress, TerminalRedrawsInPlace) {
  {
    Progress progress("ruler", 2, clock.clock(), out, true);
    clock.wait(1);
    progress.advance(1, "a");
    clock.wait(1);
    progress.advance(1, "b");
  }
  EXPECT_EQ(out.str(), "\r[ruler] 1/2 50% 1.0 it/s ETA 00:01 a\033[K\r[ruler] 2/2 100% 1.0 it/s in 00:02 b\033[K\n");
}

}  // namespace
