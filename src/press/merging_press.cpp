// Merge-on-evict on any press (kvpress MergingPress, docs/METHODS.md §6.2): after the inner press
// chose what each head keeps, every evicted slot folds its value into the most key-cosine-similar
// kept slot of the same head, when the similarity reaches similarity_threshold and is within the
// top merge_fraction of the head's similarities (torch.quantile, linear, failed ones at -inf, as
// upstream): w_e = max(sim, 0) |v_e| / (|v_e| + |v_t| + 1e-6), v_t = (v_t + sum w_e v_e) / (1 + sum w_e).
// Keys and positions never change, so the kept slots, the keys and the bytes held are exactly
// the inner press's; only kept values move. The arithmetic is in press/merge_math.cpp.
#include "press/merge_math.h"
#include "press/press_registry.h"

namespace kvsqueeze {
namespace {

struct MergingOptions {
  double similarity_threshold = 0.0;
  double merge_fraction = 1.0;
};

class MergingPress : public merge::ValueMergeWrapper {
 public:
  MergingPress(std::unique_ptr<Press> inner, double threshold, double fraction)
      : ValueMergeWrapper(std::move(inner), "merging", true), threshold_(threshold), fraction_(fraction) {}

 protected:
  void merge_layer(int64_t layer, const merge::LayerSnapshot& snap, const KeepSets& keep, KvCache& cache) override {
    const int64_t dk = cache.shape().head_dim_k, dv = cache.shape().head_dim_v;
    for (size_t h = 0; h < snap.size(); ++h) {
      const auto& s = snap[h];
      if (keep[h].size() == s.positions.size()) continue;  // nothing evicted
      const merge::HeadMerge m = merge::similarity_merge(s.keys, dk, s.values, dv, keep[h], threshold_, fraction_);
      write_values(cache, layer, static_cast<int64_t>(h), m, dv);
    }
  }

 private:
  double threshold_, fraction_;
};

}  // namespace

void register_merging_press() {
  using O = MergingOptions;
  register_wrapper<O>({"merging",
                       "Merge-on-evict on any press (MergingPress): each evicted slot's value is folded into its most key-similar "
                       "kept slot of the same head; keys unchanged.",
                       {},
                       1,
                       "Wraps every press, allocators and presses deciding over all layers (global_topk, kvzip) included; kvpress "
                       "accepts scorers only. Kept slots, keys and memory are exactly the inner press's. Must be outermost (or inside "
                       "composed). Equal similarities: the earliest kept slot (upstream: the first in top-k order).",
                       /*question_length_option=*/"",
                       /*merge_policy=*/"similarity"},
                      {field("similarity_threshold", &O::similarity_threshold, 0.0, 1.0, "minimum key cosine similarity for a merge"),
                       field("merge_fraction", &O::merge_fraction, 1e-9, 1.0,
                             "fraction of each head's evicted slots (the most similar) that merge; upstream's quantile rule")},
                      [](const O& o, PressList inner) {
                        return std::make_unique<MergingPress>(std::move(inner.at(0)), o.similarity_threshold, o.merge_fraction);
                      });
}

}  // namespace kvsqueeze
