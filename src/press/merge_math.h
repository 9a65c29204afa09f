#pragma once
// Value merging on any press (docs/METHODS.md §6.2 MergingPress, §6.3 CaM): the arithmetic of one
// head, testable on hand-made tensors, and the wrapper base both merging presses share.
//
// The wrapper snapshots every head's keys / values (fp32) before the inner press compresses,
// lets it compress (its compress() returns the slots kept, numbered as before the call; presses
// that compress every layer in finish() are matched by position instead), computes the merged
// values of the kept slots from the snapshot and overwrites them in the cache
// (KvCache::rewrite_rows, values only: keys and positions never change). Merging happens after
// the inner press's own compaction, so nothing of it can undo the merge.
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "press/wrapper_util.h"

namespace kvsqueeze::merge {

// Merged values of the kept slots of one head, in the order of `kept`, and which of them changed.
struct HeadMerge {
  std::vector<float> values;  // kept.size() x dv
  std::vector<char> changed;  // per kept slot
};

// torch.quantile(x, q) with linear interpolation, as torch computes it in fp32: rank = q (fp32)
// x (n - 1); lerp(below, above, rank - floor(rank)) by torch's formula (weight < 0.5:
// a + w (b - a), else b - (b - a)(1 - w)). -inf entries therefore give NaN or -inf thresholds,
// as upstream; any NaN in x gives NaN.
float torch_quantile(std::vector<float> x, double q);

// kvpress MergingPress.merge on one head: `keys` len x dk and `values` len x dv (fp32), `kept`
// the kept slot indices. Every evicted slot e takes its most key-cosine-similar kept slot t (norms
// clamped to >= 1e-6; equal similarities: the first in `kept`), merges when sim >= threshold and,
// for fraction < 1, sim >= torch.quantile(sims with failed ones at -inf, 1 - fraction), with
// weight w_e = max(sim, 0) |v_e| / (|v_e| + |v_t| + 1e-6); then for every t with sum w > 0,
// v_t = (v_t + sum w_e v_e) / (1 + sum w_e), accumulated in fp32 in the order of the evicted slots.
HeadMerge similarity_merge(std::span<const float> keys, int64_t dk, std::span<const float> values, int64_t dv,
                           std::span<const int32_t> kept, double threshold, double fraction);

// CaM on one head: `kept` ascending slot indices, `candidates` ascending evicted slot indices,
// `abar` the attention each slot received (len), `uniforms` one U[0,1) draw per candidate.
// Candidate i's window is the next `merge_budget` kept slots after it (fewer at the end); with
// p = clamp(abar_i / mean(abar over the window), 0, 1) (fp32; NaN -> 0, inf -> 1) it merges when
// uniforms[i] < p, adding v_i x (1 / |window|) to every value of its window (fp32, candidates in
// ascending order). `prob` receives p per candidate (NaN/inf already mapped) when not null.
HeadMerge cam_merge(std::span<const float> values, int64_t dv, std::span<const int32_t> kept, std::span<const int32_t> candidates,
                    std::span<const float> abar, int64_t merge_budget, std::span<const double> uniforms, std::vector<float>* prob = nullptr);

// The k best-scoring slots of `evicted` (ascending), ties to the later slot, NaN lowest; without
// scores (empty), the k latest. Returned ascending.
std::vector<int32_t> best_evicted(std::span<const float> scores, std::span<const int32_t> evicted, int64_t k);

// The slots of [0, len) not in `kept` (ascending, distinct).
std::vector<int32_t> complement(std::span<const int32_t> kept, int64_t len);

// CaM's draws: U[0,1) doubles from mt19937_64 seeded by std::seed_seq{seed (2 words), layer, head,
// event}, each the top 53 bits of one output times 2^-53 (portable: no std distribution).
class CamRng {
 public:
  CamRng(uint64_t seed, int64_t layer, int64_t head, int64_t event);
  double uniform() { return static_cast<double>(gen_() >> 11) * 0x1.0p-53; }

 private:
  std::mt19937_64 gen_;
};

// One head's rows as the wrapper saw them before the inner press compressed.
struct HeadSnapshot {
  std::vector<float> keys, values;  // len x dk (empty unless asked for), len x dv
  std::vector<int32_t> positions;
};
using LayerSnapshot = std::vector<HeadSnapshot>;

// The base of merging(...) and cam(...): forwards everything to the inner press and merges the
// kept slots' values after its compression (compress(), or finish() for presses deciding over
// every layer). Such a wrapper must be outermost (or inside composed): it has no scores of its
// own, and a press selecting through score()/select() would skip the merge.
class ValueMergeWrapper : public wrapper::Single {
 public:
  ValueMergeWrapper(std::unique_ptr<Press> inner, std::string name, bool snapshot_keys)
      : Single(std::move(inner)), name_(std::move(name)), snapshot_keys_(snapshot_keys) {}
  std::string name() const override { return name_; }
  LayerScores score(const LayerView& view) override;
  KeepSets select(const LayerView& view, const Budget& budget) override;
  bool triggers(const LayerView& view) const override { return inner_->triggers(view); }
  // The inner press's schedule, but not its decoding-time compression (which would skip the merge).
  PressTraits traits() const override {
    const PressTraits t = inner_->traits();
    return {.needs_all_layers = t.needs_all_layers, .own_budget = t.own_budget};
  }
  KeepSets compress(const LayerView& view, const Budget& budget, KvCache& cache) override;
  void finish(Session& session, const Budget& budget) override;

 protected:
  // Called before the inner press compresses the layer (CaM scores candidates here).
  virtual void before_compress(const LayerView& view) { (void)view; }
  // Merges `keep` (per head, indices into the snapshot) of `layer`, whose runs now hold exactly
  // the kept slots in that order; `cache` is written with write_values().
  virtual void merge_layer(int64_t layer, const LayerSnapshot& snap, const KeepSets& keep, KvCache& cache) = 0;
  // Overwrites the changed kept slots' values of one head (slot j of the run = kept slot j).
  static void write_values(KvCache& cache, int64_t layer, int64_t head, const HeadMerge& m, int64_t dv);
  LayerSnapshot snapshot(const LayerView& view) const;

 private:
  std::string name_;
  bool snapshot_keys_;
};

// cam(...) around any press, for tests that wrap a press of their own (cam_press.cpp).
std::unique_ptr<Press> make_cam_press(std::unique_ptr<Press> inner, int64_t merge_budget, uint64_t seed, bool parity);

}  // namespace kvsqueeze::merge
