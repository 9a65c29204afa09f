// The uniform budget rule (kvpress ScorerPress): every run of a layer keeps
// floor(len x (1 - ratio)) slots, the best-scoring ones, ties to the later position.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"

namespace kvsqueeze {

int64_t compress_layer(Press& press, const LayerView& view, double ratio, KvCache& cache) {
  if (!(ratio >= 0.0 && ratio < 1.0)) throw Error("compression ratio must be in [0, 1), got " + std::to_string(ratio));
  if (ratio == 0.0 || cache.window(view.layer) > 0) return 0;
  const LayerScores scores = press.score(view);
  int64_t removed = 0;
  for (int64_t h = 0; h < cache.shape().n_head_kv; ++h) {
    const int64_t len = cache.length(view.layer, h);
    const auto& s = scores.at(static_cast<size_t>(h));
    if (static_cast<int64_t>(s.size()) != len)
      throw Error("internal: press '" + press.name() + "' scored " + std::to_string(s.size()) + " slots of a run of " +
                  std::to_string(len));
    const int64_t protected_slots = std::count(s.begin(), s.end(), INFINITY);
    const int64_t keep = std::max<int64_t>(static_cast<int64_t>(std::trunc(static_cast<double>(len) * (1.0 - ratio))),
                                           protected_slots);
    if (keep >= len) continue;
    std::vector<int32_t> order(static_cast<size_t>(len));
    std::iota(order.begin(), order.end(), 0);
    auto key = [&](int32_t i) {  // NaN ranks lowest, keeping the ordering strict
      const float x = s[static_cast<size_t>(i)];
      return std::isnan(x) ? -INFINITY : x;
    };
    // Best first; equal scores: later slot (= later position) first.
    std::nth_element(order.begin(), order.begin() + keep, order.end(),
                     [&](int32_t a, int32_t b) { return key(a) > key(b) || (key(a) == key(b) && a > b); });
    order.resize(static_cast<size_t>(keep));
    std::sort(order.begin(), order.end());
    cache.compact(view.layer, h, order);
    removed += len - keep;
  }
  return removed;
}

}  // namespace kvsqueeze
