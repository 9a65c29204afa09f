#pragma once
// Helpers shared by the wrapper presses (adakv, critical, chunk, block, composed, ...): views of
// sub-ranges or gathered slots of a layer, statistics remapped to kept slots, pooled top-k.
#include <memory>

#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"

namespace kvsqueeze::wrapper {

// Statistics that index slots of the attention (window rows, column sums): a press needing
// them cannot score a slice or a gathered subset of the cache.
bool needs_attention(const StatsRequest& r);
// Throws a clear error when `inner` needs attention statistics (`wrapper` names the caller).
void reject_attention(const Press& inner, const std::string& wrapper);

// A view of slots [begin[h], end[h]) of each head of `full` (the runs' pointers offset, no copy).
// Token-indexed statistics (positions, pre-RoPE query rows, hidden states) keep the rows whose
// positions lie within head 0's sub-range; attention statistics are dropped. `standalone` marks
// the statistics as those of a context of its own (LayerStats::standalone).
class SubView {
 public:
  SubView(const LayerView& full, const std::vector<int64_t>& begin, const std::vector<int64_t>& end, bool standalone = false);
  SubView(const SubView&) = delete;
  SubView& operator=(const SubView&) = delete;
  const LayerView& view() const { return *view_; }

 private:
  LayerStats stats_;
  std::unique_ptr<LayerView> view_;
};

// A view of the listed slots of each head (any order), copied to fp32 runs. Token-indexed
// statistics are kept whole; attention statistics are dropped.
class GatheredView {
 public:
  GatheredView(const LayerView& full, const KeepSets& slots);
  GatheredView(const GatheredView&) = delete;
  GatheredView& operator=(const GatheredView&) = delete;
  const LayerView& view() const { return *view_; }

 private:
  LayerStats stats_;
  std::unique_ptr<LayerView> view_;
};

// Slot-indexed statistics (window probabilities, column sums) of a layer whose heads were
// compacted to `keep`, gathered to the kept slots; `group` query heads per KV head.
LayerStats gather_stats(const LayerStats& stats, const KeepSets& keep, int64_t group);
// keep_b applied after keep_a, as indices into the slots before keep_a.
KeepSets chain(const KeepSets& keep_a, const KeepSets& keep_b);

// The fraction of a run of `len` slots that `budget` keeps (per-chunk budgets of chunk wrappers).
double keep_fraction(const Budget& budget, int64_t len);

// Sets each head's top counts[h] scores (ties to the later slot) to FLT_MAX unless protected.
void safeguard(LayerScores& scores, const std::vector<int64_t>& counts);
// The best `total` scores of the layer, all heads pooled (protected +inf slots always; equal
// scores: the later slot, then the later head), per head ascending.
KeepSets pooled_top_k(const LayerScores& scores, int64_t total);
// kvpress AdaKV's allocation of a layer: each head keeps its own top floor(n_h * alpha) (the
// safeguard, written into `scores` as FLT_MAX), then the layer's budget sum(n_h) goes to the
// best scores of all heads pooled.
KeepSets adakv_allocation(const LayerView& view, const Budget& budget, double alpha, LayerScores& scores);

// The layer's W_o as D x (n_head * head_dim_v) floats, dequantized.
std::vector<float> output_projection(const LayerView& view);
// Per KV head and slot: mean over the group's query heads q of ||v_i W_o[q]||_1 (CriticalKV).
std::vector<std::vector<float>> projected_value_norms(const LayerView& view, const std::vector<float>& wo);

// A press wrapping one other: statistics, observation and compaction go to the inner press.
class Single : public Press {
 public:
  explicit Single(std::unique_ptr<Press> inner) : inner_(std::move(inner)) {}
  StatsRequest needs() const override { return inner_->needs(); }
  void observe(const LayerView& view) override { inner_->observe(view); }
  void compacted(int64_t layer, const KeepSets& keep) override { inner_->compacted(layer, keep); }
  std::vector<Press*> inner_presses() override { return {inner_.get()}; }

 protected:
  // Wrappers whose inner press must decide per layer, right after its attention.
  void reject_deferred(const std::string& wrapper) const {
    if (inner_->traits().needs_all_layers)
      throw Error("press '" + wrapper + "' cannot wrap '" + inner_->name() + "', which decides over all layers at once");
  }
  std::unique_ptr<Press> inner_;
};

}  // namespace kvsqueeze::wrapper
