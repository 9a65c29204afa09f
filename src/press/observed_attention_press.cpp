// ObservedAttention (H2O-like, kvpress ObservedAttentionPress): the attention each slot received
// from the context's queries, divided by the number of queries that could see it (L - i),
// averaged over the G query heads of its KV head. Column sums are accumulated over every
// prefill chunk (observe()), so chunked prefill scores the same as one pass.
#include <cmath>

#include "kvsqueeze/error.h"
#include "press/press_registry.h"

namespace kvsqueeze {
namespace {

class ObservedAttentionPress : public ScorerPress {
 public:
  std::string name() const override { return "observed_attention"; }
  StatsRequest needs() const override { return {.column_sums = true}; }
  void observe(const LayerView& v) override {
    if (v.config().layer_sliding[static_cast<size_t>(v.layer)]) return;  // sliding-window layers are never compressed
    const auto& cols = v.stats.attention.column_sums;
    if (cols.empty()) throw Error("observed_attention: column sums were not computed for layer " + std::to_string(v.layer));
    auto& acc = sums_[v.layer];
    // A chunk that starts the run starts a new context: forget the previous one's sums.
    const auto pos = v.positions(0);
    if (!pos.empty() && !v.stats.positions.empty() && pos.front() == v.stats.positions.front()) acc.clear();
    acc.resize(cols.size());
    for (size_t q = 0; q < cols.size(); ++q) {
      acc[q].resize(cols[q].size(), 0.0);  // runs only grow until the context is compressed
      for (size_t i = 0; i < cols[q].size(); ++i) acc[q][i] += cols[q][i];
    }
  }
  // Accumulated sums follow the slots the cache kept (compression between chunks, composed presses).
  void compacted(int64_t layer, const KeepSets& keep) override {
    auto it = sums_.find(layer);
    if (it == sums_.end() || keep.empty()) return;
    const size_t group = it->second.size() / keep.size();
    for (size_t q = 0; q < it->second.size(); ++q) {
      auto& acc = it->second[q];
      std::vector<double> kept;
      for (int32_t i : keep[q / group]) kept.push_back(i < static_cast<int32_t>(acc.size()) ? acc[static_cast<size_t>(i)] : 0.0);
      acc = std::move(kept);
    }
  }
  LayerScores score(const LayerView& v) override {
    const int64_t hkv = v.n_head_kv(), group = v.config().n_head / hkv;
    const auto it = sums_.find(v.layer);
    if (it == sums_.end()) throw Error("observed_attention: layer " + std::to_string(v.layer) + " was not observed");
    const int32_t next = v.stats.positions.empty() ? 0 : v.stats.positions.back() + 1;
    LayerScores out(static_cast<size_t>(hkv));
    for (int64_t h = 0; h < hkv; ++h) {
      const auto pos = v.positions(h);
      auto& s = out[static_cast<size_t>(h)];
      s.assign(pos.size(), 0.0f);
      for (int64_t g = 0; g < group; ++g) {
        const auto& acc = it->second.at(static_cast<size_t>(h * group + g));
        for (size_t i = 0; i < pos.size(); ++i)
          s[i] += static_cast<float>(acc.at(i) / static_cast<double>(next - pos[i]) / static_cast<double>(group));
      }
    }
    return out;
  }

 private:
  std::map<int64_t, std::vector<std::vector<double>>> sums_;  // layer -> query head -> slot
};

}  // namespace

void register_observed_attention_press() {
  register_press({"observed_attention", "Average attention each slot received from the context (H2O-like).", {}},
                 [] { return std::make_unique<ObservedAttentionPress>(); });
}

}  // namespace kvsqueeze
