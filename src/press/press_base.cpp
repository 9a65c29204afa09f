// The press framework: layer views, budgets, the uniform budget rule (kvpress ScorerPress:
// every run keeps max(1, floor(len x (1 - ratio))) slots, the best-scoring ones, ties to the
// later position) and the per-layer compression entry point.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"
#include "model/model_weights.h"

namespace kvsqueeze {
int64_t Budget::keep(int64_t len) const {
  if (len <= 0) return 0;
  if (tokens >= 0) return std::min(len, tokens);
  return std::max<int64_t>(1, static_cast<int64_t>(std::trunc(static_cast<double>(len) * (1.0 - ratio))));
}

Budget take_budget_options(const ModelConfig& config, KvType k_type, KvType v_type, double ratio, std::vector<std::string>& press_opts) {
  Budget b;
  b.ratio = ratio;
  std::vector<std::string> rest;
  for (const auto& kv : press_opts) {
    const bool tokens = kv.rfind("budget=", 0) == 0, bytes = kv.rfind("budget_bytes=", 0) == 0;
    if (!tokens && !bytes) {
      rest.push_back(kv);
      continue;
    }
    const std::string text = kv.substr(kv.find('=') + 1);
    size_t used = 0;
    double v = -1;
    try {
      v = std::stod(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != text.size() || text.empty() || !(v >= 1) || v != std::floor(v) || v > 1e15)
      throw Error(std::string(tokens ? "budget" : "budget_bytes") + " must be a positive integer, got '" + text + "'");
    if (ratio != 0.0) throw ParameterError("ratio", "give either `ratio` or an absolute budget (" + kv + "), not both");
    if (tokens) {
      b.tokens = static_cast<int64_t>(v);
    } else {
      int64_t compressible = 0;
      for (bool sliding : config.layer_sliding) compressible += sliding ? 0 : 1;
      const double slot = static_cast<double>(kv_slot_bytes(k_type, v_type, config.head_dim_k, config.head_dim_v));
      b.tokens = static_cast<int64_t>(v / (slot * static_cast<double>(std::max<int64_t>(1, compressible) * config.n_head_kv)));
      if (b.tokens < 1) throw Error("budget_bytes=" + text + " is less than one slot per head of this model");
    }
  }
  press_opts = rest;
  return b;
}

LayerScores Press::score(const LayerView&) { throw Error("press '" + name() + "' does not score slots and cannot be wrapped as a scorer"); }

KeepSets Press::select(const LayerView& view, const Budget& budget) {
  const LayerScores scores = score(view);
  std::vector<int64_t> counts;
  for (int64_t h = 0; h < view.n_head_kv(); ++h) {
    if (static_cast<int64_t>(scores.at(static_cast<size_t>(h)).size()) != view.length(h))
      throw Error("internal: press '" + name() + "' scored " + std::to_string(scores[static_cast<size_t>(h)].size()) +
                  " slots of a run of " + std::to_string(view.length(h)));
    counts.push_back(budget.keep(view.length(h)));
  }
  return top_k_per_head(scores, counts);
}

KeepSets Press::compress(const LayerView& view, const Budget& budget, KvCache& cache) {
  KeepSets keep = select(view, budget);
  compact_layer(cache, view.layer, keep);
  compacted(view.layer, keep);
  return keep;
}

KeepSets top_k_per_head(const LayerScores& scores, const std::vector<int64_t>& counts) {
  KeepSets out(scores.size());
  for (size_t h = 0; h < scores.size(); ++h) {
    const auto& s = scores[h];
    const auto len = static_cast<int64_t>(s.size());
    const int64_t protected_slots = std::count(s.begin(), s.end(), INFINITY);
    const int64_t keep = std::min(len, std::max(counts.at(h), protected_slots));
    std::vector<int32_t> order(static_cast<size_t>(len));
    std::iota(order.begin(), order.end(), 0);
    if (keep < len) {
      auto key = [&](int32_t i) {  // NaN ranks lowest, keeping the ordering strict
        const float x = s[static_cast<size_t>(i)];
        return std::isnan(x) ? -INFINITY : x;
      };
      std::nth_element(order.begin(), order.begin() + keep, order.end(),
                       [&](int32_t a, int32_t b) { return key(a) > key(b) || (key(a) == key(b) && a > b); });
      order.resize(static_cast<size_t>(keep));
      std::sort(order.begin(), order.end());
    }
    out[h] = std::move(order);
  }
  return out;
}

void compact_layer(KvCache& cache, int64_t layer, const KeepSets& keep) {
  for (int64_t h = 0; h < cache.shape().n_head_kv; ++h) {
    const auto& k = keep.at(static_cast<size_t>(h));
    if (static_cast<int64_t>(k.size()) != cache.length(layer, h)) cache.compact(layer, h, k);
  }
}

int64_t compress_layer(Press& press, const LayerView& view, const Budget& budget, KvCache& cache) {
  if (!(budget.ratio >= 0.0 && budget.ratio < 1.0))
    throw Error("compression ratio must be in [0, 1) (the fraction removed), got " + std::to_string(budget.ratio));
  if ((budget.none() && !press.traits().own_budget) || cache.window(view.layer) > 0) return 0;
  int64_t before = 0, after = 0;
  for (int64_t h = 0; h < cache.shape().n_head_kv; ++h) before += cache.length(view.layer, h);
  press.set_budget(budget);
  press.compress(view, budget, cache);
  for (int64_t h = 0; h < cache.shape().n_head_kv; ++h) after += cache.length(view.layer, h);
  return before - after;
}

}  // namespace kvsqueeze
