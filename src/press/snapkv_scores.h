#pragma once
// SnapKV scores (docs/METHODS.md §3.4), shared by snapkv and pyramidkv: the attention the last w
// queries (the window the forward pass computed) pay to each earlier slot, averaged over those
// queries, smoothed by a 1-D average pool (kernel_size, stride 1, zero padding counted as torch's
// avg_pool1d does), averaged over the G query heads of each KV head. The window scores +inf.
#include <algorithm>
#include <cmath>
#include <string>

#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"
#include "press/press_registry.h"

namespace kvsqueeze {

inline LayerScores snapkv_scores(const LayerView& v, int64_t kernel, const std::string& press_name) {
  const int64_t hkv = v.n_head_kv(), group = v.config().n_head / hkv;
  const auto& probs = v.stats.attention;
  const int64_t w = probs.window_rows;
  if (probs.window.empty() || w == 0)
    throw Error(press_name + ": window attention was not computed for layer " + std::to_string(v.layer));
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
        for (int64_t k = i - kernel / 2; k <= i + kernel / 2; ++k)
          if (k >= 0 && k < n) pooled += a[static_cast<size_t>(k)] / static_cast<double>(w);
        mean[static_cast<size_t>(i)] += pooled / static_cast<double>(kernel) / static_cast<double>(group);
      }
    }
    for (int64_t i = 0; i < n; ++i) s[static_cast<size_t>(i)] = static_cast<float>(mean[static_cast<size_t>(i)]);
    for (int64_t i = n; i < len; ++i) s[static_cast<size_t>(i)] = INFINITY;
  }
  return out;
}

// The options of these scores (fields window_size and kernel_size of a press's options struct O),
// declared once for the presses that score with them.
template <class O>
std::vector<OptionField<O>> snapkv_fields() {
  return {field("window_size", &O::window_size, 1, 1e6, "queries whose attention scores the cache; their slots are kept"),
          field("kernel_size", &O::kernel_size, 1, 1001, "odd width of the average pool over slots")};
}
// The pool is centred on each slot: kernel_size must be odd.
inline void check_kernel_size(const std::string& press_name, int64_t kernel_size) {
  if (kernel_size % 2 == 0)
    throw Error("press '" + press_name + "' option 'kernel_size' must be odd, got " + std::to_string(kernel_size));
}

}  // namespace kvsqueeze
