// SimLayerKV (arXiv 2410.13846, kvpress SimLayerKVPress; docs/METHODS.md §3.17): a layer is lazy
// when its last n_last queries pay more than lazy_threshold of their attention to the first
// n_initial slots plus the n_recent slots before them (averaged over query heads and those
// queries; the window's own columns are left out, as kvpress's window attention does). A lazy
// layer keeps only [0, n_initial) and its last n_recent - n_last slots (StreamingLLM); other
// layers keep everything. The ratio is not used: laziness alone decides.
#include "press/simlayerkv_press.h"

#include <algorithm>
#include <numeric>

#include "kvsqueeze/error.h"
#include "press/press_registry.h"

namespace kvsqueeze {

double simlayerkv_mass(const LayerView& v, int64_t n_initial, int64_t n_recent) {
  const auto& probs = v.stats.attention;
  const int64_t w = probs.window_rows, group = v.group();
  if (probs.window.empty() || w == 0)
    throw Error("simlayerkv: window attention was not computed for layer " + std::to_string(v.layer));
  double total = 0;
  int64_t rows = 0;
  for (int64_t h = 0; h < v.n_head_kv(); ++h) {
    const int64_t len = v.length(h), n = std::max<int64_t>(0, len - w);  // columns before the window
    for (int64_t g = 0; g < group; ++g) {
      const auto& p = probs.window[static_cast<size_t>(h * group + g)];
      for (int64_t r = 0; r < w; ++r) {
        const float* row = p.data() + r * len;
        double mass = 0;  // both ranges are summed even where they overlap, as kvpress does
        for (int64_t i = 0; i < std::min(n_initial, n); ++i) mass += row[i];
        for (int64_t i = std::max<int64_t>(0, n - n_recent); i < n; ++i) mass += row[i];
        total += mass;
        ++rows;
      }
    }
  }
  return rows ? total / static_cast<double>(rows) : 0.0;
}

namespace {

struct SimLayerKvOptions {
  double lazy_threshold = 1.0;
  int64_t n_last = 1;
  int64_t n_recent = 1024;
  int64_t n_initial = 4;
};

class SimLayerKvPress : public Press {
 public:
  SimLayerKvPress(double threshold, int64_t n_last, int64_t n_recent, int64_t n_initial)
      : threshold_(threshold), n_last_(n_last), n_recent_(n_recent), n_initial_(n_initial) {}
  std::string name() const override { return "simlayerkv"; }
  PressTraits traits() const override { return {.own_budget = true}; }  // laziness decides, not the ratio
  StatsRequest needs() const override { return {.window_queries = n_last_}; }
  KeepSets select(const LayerView& v, const Budget&) override {
    KeepSets keep(static_cast<size_t>(v.n_head_kv()));
    int64_t shortest = INT64_MAX;
    for (int64_t h = 0; h < v.n_head_kv(); ++h) shortest = std::min(shortest, v.length(h));
    // Too short to tell (kvpress: fewer than n_initial + n_recent tokens), or not lazy.
    const bool lazy = shortest >= n_initial_ + n_recent_ && simlayerkv_mass(v, n_initial_, n_recent_) > threshold_;
    for (int64_t h = 0; h < v.n_head_kv(); ++h) {
      const int64_t len = v.length(h);
      auto& k = keep[static_cast<size_t>(h)];
      if (!lazy) {
        k.resize(static_cast<size_t>(len));
        std::iota(k.begin(), k.end(), 0);
        continue;
      }
      for (int64_t i = 0; i < n_initial_; ++i) k.push_back(static_cast<int32_t>(i));
      for (int64_t i = len - (n_recent_ - n_last_); i < len; ++i) k.push_back(static_cast<int32_t>(i));
    }
    return keep;
  }

 private:
  double threshold_;
  int64_t n_last_, n_recent_, n_initial_;
};

}  // namespace

void register_simlayerkv_press() {
  using O = SimLayerKvOptions;
  register_press<O>({"simlayerkv",
                     "Layers whose last queries attend almost only to the first and most recent slots keep just those "
                     "(SimLayerKV); other layers keep everything.",
                     {},
                     0,
                     "Not a scorer: it cannot be wrapped. The compression ratio is ignored (any nonzero ratio enables the press). "
                     "Layers shorter than n_initial + n_recent are never compressed."},
                    {field("lazy_threshold", &O::lazy_threshold, 0, 1e9,
                           "a layer is lazy above this attention mass (1: never; suggested Llama-3 0.9, Llama-2 0.65, Mistral 0.8, Qwen 0.85)"),
                     field("n_last", &O::n_last, 1, 1e6, "last queries whose attention measures laziness"),
                     field("n_recent", &O::n_recent, 2, 1e9, "recent slots a lazy layer keeps (n_recent - n_last of them, as kvpress)"),
                     field("n_initial", &O::n_initial, 0, 1e9, "first slots a lazy layer keeps")},
                    [](const O& o) {
                      if (o.n_recent <= o.n_last)
                        throw Error("press 'simlayerkv' option 'n_recent' must exceed n_last (" + std::to_string(o.n_last) + "), got " +
                                    std::to_string(o.n_recent));
                      return std::make_unique<SimLayerKvPress>(o.lazy_threshold, o.n_last, o.n_recent, o.n_initial);
                    });
}

}  // namespace kvsqueeze
