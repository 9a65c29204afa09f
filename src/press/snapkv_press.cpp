// SnapKV (arXiv 2404.14469, kvpress SnapKVPress): the attention the last `window_size` queries
// pay to each earlier slot, averaged over those queries, smoothed by a 1-D average pool
// (kernel_size, stride 1, zero padding counted as torch's avg_pool1d does), averaged over the
// G query heads of each KV head. The window itself is protected and counts in the budget.
#include <cmath>

#include "kvsqueeze/error.h"
#include "press/press_registry.h"

namespace kvsqueeze {
namespace {

class SnapKvPress : public Press {
 public:
  SnapKvPress(int64_t window, int64_t kernel) : window_(window), kernel_(kernel) {}
  std::string name() const override { return "snapkv"; }
  StatsRequest needs() const override {
    StatsRequest r;
    r.window_queries = window_;
    return r;
  }
  LayerScores score(const LayerView& v) override {
    const int64_t hkv = v.n_head_kv(), group = v.config().n_head / hkv;
    const auto& probs = v.stats.attention;
    const int64_t w = probs.window_rows;
    if (probs.window.empty() || w == 0) throw Error("snapkv: window attention was not computed for layer " + std::to_string(v.layer));
    LayerScores out(static_cast<size_t>(hkv));
    for (int64_t h = 0; h < hkv; ++h) {
      const int64_t len = v.length(h);
      auto& s = out[static_cast<size_t>(h)];
      s.assign(static_cast<size_t>(len), 0.0f);
      if (len <= w) {  // nothing before the window: keep everything
        std::fill(s.begin(), s.end(), INFINITY);
        continue;
      }
      const int64_t n = len - w;  // slots before the window
      std::vector<double> mean(static_cast<size_t>(n), 0.0);
      for (int64_t g = 0; g < group; ++g) {
        const auto& p = probs.window[static_cast<size_t>(h * group + g)];
        std::vector<double> a(static_cast<size_t>(n), 0.0);
        for (int64_t r = 0; r < w; ++r)
          for (int64_t i = 0; i < n; ++i) a[static_cast<size_t>(i)] += p[static_cast<size_t>(r * len + i)];
        for (int64_t i = 0; i < n; ++i) {
          double pooled = 0;  // zero padding is included in the average, as avg_pool1d does
          for (int64_t k = i - kernel_ / 2; k <= i + kernel_ / 2; ++k)
            if (k >= 0 && k < n) pooled += a[static_cast<size_t>(k)] / static_cast<double>(w);
          mean[static_cast<size_t>(i)] += pooled / static_cast<double>(kernel_) / static_cast<double>(group);
        }
      }
      for (int64_t i = 0; i < n; ++i) s[static_cast<size_t>(i)] = static_cast<float>(mean[static_cast<size_t>(i)]);
      for (int64_t i = n; i < len; ++i) s[static_cast<size_t>(i)] = INFINITY;
    }
    return out;
  }

 private:
  int64_t window_, kernel_;
};

}  // namespace

void register_snapkv_press() {
  register_scorer({"snapkv", "Attention of the last window_size queries, pooled (SnapKV).",
                  {{"window_size", "int", 64, 1, 1e6, "queries whose attention scores the cache; their slots are kept"},
                   {"kernel_size", "int", 5, 1, 1001, "odd width of the average pool over slots"}}},
                 [](const PressOptionValues& o) {
                   const auto kernel = static_cast<int64_t>(o.at("kernel_size"));
                   if (kernel % 2 == 0) throw Error("press 'snapkv' option 'kernel_size' must be odd, got " + std::to_string(kernel));
                   return std::make_unique<SnapKvPress>(static_cast<int64_t>(o.at("window_size")), kernel);
                 });
}

}  // namespace kvsqueeze
