// Global top-k across layers (docs/METHODS.md §4.6, KVzip's allocation for any scorer): every
// compressible layer is scored by the inner press right after its attention on the context's
// last chunk; once the whole context was evaluated, the lowest floor(total cr) scores over all
// (layer, KV head, slot) are evicted together (budget=N: all but N per head on average). Layers
// and heads therefore keep different numbers of slots, and the cache really shrinks. Protected
// (+inf) slots are never evicted and count inside the budget; every head keeps at least its best
// slot. Scores must be comparable across layers.
#include <algorithm>
#include <cmath>
#include <tuple>

#include "kvsqueeze/error.h"
#include "kvsqueeze/session.h"
#include "press/press_registry.h"
#include "press/wrapper_util.h"

namespace kvsqueeze {
namespace {

class GlobalTopKPress : public wrapper::Single {
 public:
  explicit GlobalTopKPress(std::unique_ptr<Press> inner) : Single(std::move(inner)) { reject_deferred("global_topk"); }
  std::string name() const override { return "global_topk"; }
  PressTraits traits() const override { return {.needs_all_layers = true}; }
  LayerScores score(const LayerView& view) override { return inner_->score(view); }
  // The pipeline announces the budget before it evaluates the context: from then on, the last
  // chunk's layers are scored for finish().
  void set_budget(const Budget& budget) override {
    budget_ = budget;
    armed_ = true;
    inner_->set_budget(budget);
  }
  void observe(const LayerView& view) override {
    inner_->observe(view);
    const auto l = static_cast<size_t>(view.layer);
    if (!armed_ || !view.stats.last_chunk || view.config().layer_sliding[l]) return;
    if (scores_.size() != static_cast<size_t>(view.config().n_layer)) scores_.assign(static_cast<size_t>(view.config().n_layer), {});
    scores_[l] = inner_->score(view);
  }
  void finish(Session& session, const Budget& budget) override;
  // Decoding-time compression runs layer by layer: the layer's budget, all heads pooled.
  KeepSets select(const LayerView& view, const Budget& budget) override {
    inner_->set_budget(budget);
    const LayerScores scores = inner_->score(view);
    int64_t total = 0;
    for (int64_t h = 0; h < view.n_head_kv(); ++h) total += budget.keep(view.length(h));
    return wrapper::pooled_top_k(scores, total);
  }
  KeepSets compress(const LayerView& view, const Budget& budget, KvCache& cache) override {
    armed_ = false;
    scores_.clear();
    return Press::compress(view, budget, cache);
  }

 private:
  Budget budget_;
  bool armed_ = false;
  std::vector<LayerScores> scores_;  // [layer][KV head][slot], empty for layers not scored
};

void GlobalTopKPress::finish(Session& session, const Budget& budget) {
  KvCache& cache = session.cache();
  const auto& cfg = session.model().config();
  armed_ = false;
  std::vector<LayerScores> scores = std::move(scores_);
  scores_.clear();
  struct Cand {
    float s;
    int32_t slot, layer, head;
  };
  std::vector<Cand> cands;
  int64_t total = 0, units = 0;
  std::vector<std::vector<std::vector<char>>> keep(static_cast<size_t>(cfg.n_layer));
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    if (cfg.layer_sliding[static_cast<size_t>(l)] || cache.window(l) > 0) continue;
    if (static_cast<int64_t>(scores.size()) <= l || scores[static_cast<size_t>(l)].empty())
      throw Error("global_topk: layer " + std::to_string(l) + " was not scored (the context must be evaluated by the pipeline)");
    const auto& ls = scores[static_cast<size_t>(l)];
    auto& kl = keep[static_cast<size_t>(l)];
    kl.resize(static_cast<size_t>(cfg.n_head_kv));
    for (int64_t h = 0; h < cfg.n_head_kv; ++h) {
      const auto& s = ls.at(static_cast<size_t>(h));
      const int64_t len = cache.length(l, h);
      if (static_cast<int64_t>(s.size()) != len)
        throw Error("internal: global_topk scored " + std::to_string(s.size()) + " slots of layer " + std::to_string(l) + " head " +
                    std::to_string(h) + ", which holds " + std::to_string(len));
      total += len;
      ++units;
      auto& k = kl[static_cast<size_t>(h)];
      k.assign(static_cast<size_t>(len), 1);
      // A head without protected slots keeps its best slot whatever happens (never ends empty).
      auto key = [&](int64_t j) { return std::isnan(s[static_cast<size_t>(j)]) ? -INFINITY : s[static_cast<size_t>(j)]; };
      int64_t best = -1;
      if (std::find(s.begin(), s.end(), INFINITY) == s.end())
        for (int64_t j = 0; j < len; ++j)
          if (best < 0 || key(j) >= key(best)) best = j;
      for (int64_t j = 0; j < len; ++j) {
        const float x = s[static_cast<size_t>(j)];
        if (x == INFINITY || j == best) continue;
        cands.push_back({std::isnan(x) ? -INFINITY : x, static_cast<int32_t>(j), static_cast<int32_t>(l), static_cast<int32_t>(h)});
      }
    }
  }
  int64_t n_evict = budget.tokens >= 0 ? std::max<int64_t>(0, total - budget.tokens * units)
                                       : static_cast<int64_t>(std::trunc(static_cast<double>(total) * budget.ratio));
  n_evict = std::min<int64_t>(n_evict, static_cast<int64_t>(cands.size()));
  // Lowest first; equal scores: the earlier slot, then the earlier layer and head, goes first.
  std::nth_element(cands.begin(), cands.begin() + n_evict, cands.end(), [](const Cand& a, const Cand& b) {
    return std::tie(a.s, a.slot, a.layer, a.head) < std::tie(b.s, b.slot, b.layer, b.head);
  });
  for (int64_t i = 0; i < n_evict; ++i) {
    const auto& c = cands[static_cast<size_t>(i)];
    keep[static_cast<size_t>(c.layer)][static_cast<size_t>(c.head)][static_cast<size_t>(c.slot)] = 0;
  }
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    if (keep[static_cast<size_t>(l)].empty()) continue;
    KeepSets k(static_cast<size_t>(cfg.n_head_kv));
    for (int64_t h = 0; h < cfg.n_head_kv; ++h) {
      const auto& m = keep[static_cast<size_t>(l)][static_cast<size_t>(h)];
      for (size_t j = 0; j < m.size(); ++j)
        if (m[j]) k[static_cast<size_t>(h)].push_back(static_cast<int32_t>(j));
    }
    compact_layer(cache, l, k);
    inner_->compacted(l, k);
  }
}

}  // namespace

void register_global_topk_press() {
  register_wrapper({"global_topk",
                    "Global top-k across layers: the inner press scores every layer, then the lowest scores of all layers and heads "
                    "pooled are evicted together (KVzip's allocation for any scorer).",
                    {},
                    1,
                    "Evicts for real: layers and heads end with different lengths. Scores must be comparable across layers "
                    "(attention-based scorers). The prefill holds the whole context's KV until every layer is scored. Every head "
                    "keeps at least its best slot; ties: the earlier slot goes first. Decoding-time compression runs layer by "
                    "layer, so there it pools each layer's heads only (adakv without safeguard)."},
                   [](PressList inner) { return std::make_unique<GlobalTopKPress>(std::move(inner.at(0))); });
}

}  // namespace kvsqueeze
