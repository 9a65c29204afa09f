// CaM, cache merging (kvpress CAMPress, docs/METHODS.md §6.3), on any press. The wrapper keeps
// Abar, the attention each slot received (mean over the G query heads of its KV head), summed
// over every query it observed since the sequence started: the context's queries (attention
// column sums, accumulated over prefill chunks) and every generated token while it compresses
// during decoding. Used as decode press only, it sums generated tokens only, as upstream.
//
// When the inner press compresses a layer, the merge candidates of each head are its evicted
// slots; when k, the tokens added since that layer's last compression, is smaller than the number
// evicted, only the k best-scoring evicted (inner press's score(), ties to the later slot;
// presses that cannot score: the k latest). Candidate i's window is the next merge_budget kept
// slots after it (fewer at the end, none: nothing); with probability
// p = clamp(Abar_i / mean(Abar over the window), 0, 1) (NaN -> 0, inf -> 1) it adds v_i / |window|
// to every value of its window. Keys never change.
//
// Draws: one U[0,1) per candidate in ascending slot order from mt19937_64 seeded with
// std::seed_seq{seed, layer, head, event} (event: the layer's compressions in this sequence),
// the top 53 bits x 2^-53; a candidate merges when its draw < p (so p = 0 never, p = 1 always).
//
// parity=true: kvpress's rule: inner scores averaged over the KV heads, the same L - target
// lowest slots evicted from every head (target: the budget's keep), the same k candidates.
#include <algorithm>
#include <climits>
#include <map>
#include <numeric>
#include <span>

#include "kvsqueeze/error.h"
#include "press/merge_math.h"
#include "press/press_registry.h"

namespace kvsqueeze {
namespace {

struct CamOptions {
  int64_t merge_budget = 32;
  int64_t seed = 42;
  bool parity = false;
};

class CamPress : public merge::ValueMergeWrapper {
 public:
  CamPress(std::unique_ptr<Press> inner, int64_t merge_budget, uint64_t seed, bool parity)
      : ValueMergeWrapper(std::move(inner), "cam", false), merge_budget_(merge_budget), seed_(seed), parity_(parity) {
    if (parity_ && inner_->traits().needs_all_layers)
      throw Error("press 'cam' with parity=true needs a scorer, not '" + inner_->name() + "', which decides over all layers at once");
  }
  StatsRequest needs() const override {
    StatsRequest r = inner_->needs();
    r.column_sums = true;
    return r;
  }
  void observe(const LayerView& view) override;
  void compacted(int64_t layer, const KeepSets& keep) override {
    remap(layer, keep);
    inner_->compacted(layer, keep);
  }
  KeepSets compress(const LayerView& view, const Budget& budget, KvCache& cache) override {
    if (parity_) return compress_parity(view, budget, cache);
    return ValueMergeWrapper::compress(view, budget, cache);
  }

 protected:
  void before_compress(const LayerView& view) override {
    scores_.clear();
    bool need = false;
    for (int64_t h = 0; h < view.n_head_kv(); ++h) need = need || added(view.layer) < view.length(h);
    if (!need) return;
    try {
      scores_ = inner_->score(view);
    } catch (const Error&) {
      scores_.clear();  // a press that cannot score: the k latest evicted are the candidates
    }
  }
  void merge_layer(int64_t layer, const merge::LayerSnapshot& snap, const KeepSets& keep, KvCache& cache) override;

 private:
  // Abar of one layer, per KV head, with the position of each entry (so that it follows the run
  // whatever happened to it: rollbacks, compactions, tokens evaluated without statistics).
  struct Head {
    std::vector<int32_t> pos;
    std::vector<double> abar;
  };
  struct Layer {
    std::vector<Head> heads;
    int64_t added = 0;   // tokens observed since the last compression
    int64_t events = 0;  // compressions in this sequence
  };
  int64_t added(int64_t layer) const {
    const auto it = layers_.find(layer);
    return it == layers_.end() ? 0 : it->second.added;
  }
  // Abar aligned to `positions` (entries matched by position, 0 for slots never observed).
  static std::vector<double> aligned(const Head& h, std::span<const int32_t> positions) {
    std::vector<double> out(positions.size(), 0.0);
    size_t i = 0;
    for (size_t j = 0; j < positions.size(); ++j) {
      while (i < h.pos.size() && h.pos[i] < positions[j]) ++i;
      if (i < h.pos.size() && h.pos[i] == positions[j]) out[j] = h.abar[i];
    }
    return out;
  }
  void remap(int64_t layer, const KeepSets& keep) {
    auto it = layers_.find(layer);
    if (it == layers_.end()) return;
    for (size_t h = 0; h < it->second.heads.size() && h < keep.size(); ++h) {
      Head& hd = it->second.heads[h];
      Head out;
      for (int32_t i : keep[h])
        if (i < static_cast<int32_t>(hd.pos.size())) out.pos.push_back(hd.pos[static_cast<size_t>(i)]), out.abar.push_back(hd.abar[static_cast<size_t>(i)]);
      hd = std::move(out);
    }
  }
  // After a compression: Abar follows the kept slots, takes the run's (possibly renumbered)
  // positions, and the layer's count restarts.
  void compressed(int64_t layer, const std::vector<std::vector<double>>& abar, const KeepSets& keep, const KvCache& cache) {
    Layer& L = layers_[layer];
    L.heads.assign(abar.size(), {});
    for (size_t h = 0; h < abar.size(); ++h) {
      const auto p = cache.positions(layer, static_cast<int64_t>(h));
      L.heads[h].pos.assign(p.begin(), p.end());
      for (int32_t i : keep[h]) L.heads[h].abar.push_back(abar[h][static_cast<size_t>(i)]);
    }
    L.added = 0;
    ++L.events;
  }
  std::vector<double> draws(int64_t layer, int64_t head, size_t n) const {
    const auto it = layers_.find(layer);
    merge::CamRng rng(seed_, layer, head, it == layers_.end() ? 0 : it->second.events);
    std::vector<double> u(n);
    for (auto& x : u) x = rng.uniform();
    return u;
  }
  std::vector<std::vector<double>> abar_of(int64_t layer, const merge::LayerSnapshot& snap) const {
    std::vector<std::vector<double>> out(snap.size());
    const auto it = layers_.find(layer);
    for (size_t h = 0; h < snap.size(); ++h)
      out[h] = it == layers_.end() || h >= it->second.heads.size() ? std::vector<double>(snap[h].positions.size(), 0.0)
                                                                   : aligned(it->second.heads[h], snap[h].positions);
    return out;
  }
  static std::vector<float> to_float(const std::vector<double>& x) { return {x.begin(), x.end()}; }
  KeepSets compress_parity(const LayerView& view, const Budget& budget, KvCache& cache);

  int64_t merge_budget_;
  uint64_t seed_;
  bool parity_;
  LayerScores scores_;  // the inner press's scores of the layer being compressed (candidates)
  std::map<int64_t, Layer> layers_;
};

void CamPress::observe(const LayerView& view) {
  inner_->observe(view);
  if (view.config().layer_sliding[static_cast<size_t>(view.layer)] || view.stats.positions.empty()) return;
  const auto& cols = view.stats.attention.column_sums;
  if (cols.empty()) throw Error("cam: attention column sums were not computed for layer " + std::to_string(view.layer));
  const int64_t hkv = view.n_head_kv(), group = view.group();
  if (static_cast<int64_t>(cols.size()) != hkv * group) throw Error("internal: cam got column sums of " + std::to_string(cols.size()) + " query heads");
  const int32_t first = view.stats.positions.front();
  Layer& L = layers_[view.layer];
  // A chunk that starts the run starts a new sequence.
  if (view.length(0) > 0 && view.positions(0).front() == first) L = Layer{};
  L.heads.resize(static_cast<size_t>(hkv));
  int64_t dropped = 0;
  for (int64_t h = 0; h < hkv; ++h) {
    Head& hd = L.heads[static_cast<size_t>(h)];
    // Entries at or past the chunk's first position belong to rolled-back tokens.
    const auto cut = static_cast<size_t>(std::lower_bound(hd.pos.begin(), hd.pos.end(), first) - hd.pos.begin());
    if (h == 0) dropped = static_cast<int64_t>(hd.pos.size() - cut);
    hd.pos.resize(cut);
    hd.abar.resize(cut);
    const auto pos = view.positions(h);
    std::vector<double> a = aligned(hd, pos);
    for (int64_t g = 0; g < group; ++g) {
      const auto& c = cols[static_cast<size_t>(h * group + g)];
      if (c.size() != pos.size())
        throw Error("internal: cam got " + std::to_string(c.size()) + " column sums for a run of " + std::to_string(pos.size()));
      for (size_t i = 0; i < c.size(); ++i) a[i] += static_cast<double>(c[i]) / static_cast<double>(group);
    }
    hd.pos.assign(pos.begin(), pos.end());
    hd.abar = std::move(a);
  }
  L.added = std::max<int64_t>(0, L.added - dropped) + static_cast<int64_t>(view.stats.positions.size());
}

void CamPress::merge_layer(int64_t layer, const merge::LayerSnapshot& snap, const KeepSets& keep, KvCache& cache) {
  const int64_t dv = cache.shape().head_dim_v, k = added(layer);
  const auto abar = abar_of(layer, snap);
  for (size_t h = 0; h < snap.size(); ++h) {
    const auto& s = snap[h];
    const std::vector<int32_t> evicted = merge::complement(keep[h], static_cast<int64_t>(s.positions.size()));
    if (evicted.empty()) continue;
    const bool scored = h < scores_.size() && scores_[h].size() == s.positions.size();
    const std::vector<int32_t> cands = merge::best_evicted(scored ? std::span<const float>(scores_[h]) : std::span<const float>{}, evicted, k);
    const auto u = draws(layer, static_cast<int64_t>(h), cands.size());
    const merge::HeadMerge m = merge::cam_merge(s.values, dv, keep[h], cands, to_float(abar[h]), merge_budget_, u);
    write_values(cache, layer, static_cast<int64_t>(h), m, dv);
  }
  scores_.clear();
  compressed(layer, abar, keep, cache);
}

KeepSets CamPress::compress_parity(const LayerView& view, const Budget& budget, KvCache& cache) {
  const int64_t hkv = view.n_head_kv(), len = view.length(0);
  for (int64_t h = 1; h < hkv; ++h)
    if (view.length(h) != len)
      throw Error("press 'cam' with parity=true evicts the same slots from every head: layer " + std::to_string(view.layer) +
                  " has heads of different lengths (give it a uniform press, not an allocator)");
  LayerScores scores;
  try {
    scores = inner_->score(view);
  } catch (const Error& e) {
    throw Error("press 'cam' with parity=true averages its inner press's scores over heads: " + std::string(e.what()));
  }
  // Scores averaged over the KV heads (sum in head order, then divided, in fp32 as torch's mean).
  std::vector<float> mean(static_cast<size_t>(len), 0.0f);
  for (int64_t h = 0; h < hkv; ++h)
    for (int64_t i = 0; i < len; ++i) mean[static_cast<size_t>(i)] += scores.at(static_cast<size_t>(h)).at(static_cast<size_t>(i));
  for (auto& x : mean) x /= static_cast<float>(hkv);
  const int64_t target = budget.keep(len);
  KeepSets all(static_cast<size_t>(hkv));
  for (auto& a : all) {
    a.resize(static_cast<size_t>(len));
    std::iota(a.begin(), a.end(), 0);
  }
  if (target >= len) return all;
  const std::vector<int32_t> kept = top_k_per_head({mean}, {target})[0];
  const std::vector<int32_t> evicted = merge::complement(kept, len);
  const merge::LayerSnapshot snap = snapshot(view);
  const auto abar = abar_of(view.layer, snap);
  const std::vector<int32_t> cands = merge::best_evicted(mean, evicted, added(view.layer));
  const KeepSets keep(static_cast<size_t>(hkv), kept);
  compact_layer(cache, view.layer, keep);
  inner_->compacted(view.layer, keep);
  const int64_t dv = view.head_dim_v();
  for (int64_t h = 0; h < hkv; ++h) {
    const auto u = draws(view.layer, h, cands.size());
    const merge::HeadMerge m =
        merge::cam_merge(snap[static_cast<size_t>(h)].values, dv, kept, cands, to_float(abar[static_cast<size_t>(h)]), merge_budget_, u);
    write_values(cache, view.layer, h, m, dv);
  }
  compressed(view.layer, abar, keep, cache);
  return keep;
}

}  // namespace

std::unique_ptr<Press> merge::make_cam_press(std::unique_ptr<Press> inner, int64_t merge_budget, uint64_t seed, bool parity) {
  return std::make_unique<CamPress>(std::move(inner), merge_budget, seed, parity);
}

void register_cam_press() {
  using O = CamOptions;
  register_wrapper<O>({"cam",
                       "Cache merging (CAMPress) on any press: evicted slots' values are merged, with a probability from the "
                       "attention they received, into the next kept slots; keys unchanged.",
                       {},
                       1,
                       "kvpress runs CaM while decoding only, on generated tokens' attention; here any compression merges (prefill "
                       "too), with the attention of every query observed since the sequence started (context and generated). "
                       "Default: each head keeps what the inner press chose (allocators allowed) and merges its own k best evicted "
                       "slots; parity=true reproduces kvpress's head-averaged eviction. Presses deciding over all layers in finish() "
                       "(kvzip, global_topk at prefill) give no per-layer scores: candidates are then the k latest evicted. Draws are "
                       "seeded and portable, not torch.bernoulli's. Must be outermost (or inside composed).",
                       /*question_length_option=*/"",
                       /*merge_policy=*/"cam"},
                      {field("merge_budget", &O::merge_budget, 1, 1e9, "kept slots after a candidate that share its value"),
                       seed_field(&O::seed, "seed of the merge draws (mt19937_64 keyed by seed, layer, head, event)"),
                       field("parity", &O::parity, "kvpress's rule: inner scores averaged over heads, the same slots evicted from every head")},
                      [](const O& o, PressList inner) {
                        return std::make_unique<CamPress>(std::move(inner.at(0)), o.merge_budget, static_cast<uint64_t>(o.seed), o.parity);
                      });
}

}  // namespace kvsqueeze
