// Key re-rotation (kvpress KeyRerotationPress; SinkCache, FINCH): after the inner press chose
// the kept slots, they are renumbered 0..n-1 in position order and each key is rotated by
// delta = i - p_i (RoPE angles delta * inv_freq in fp32, the layer's frequencies), as if the kept
// tokens had been contiguous. The tokens that follow continue at position n: the press reports
// it through next_position() and prefill_with_press sets it on the session (a caller
// compressing layer by layer itself must call Session::set_next_position(n)).
//
// Every compressed layer and head must keep the same n (positions are shared by the whole
// sequence), so head-wise allocators are rejected. Models with sliding-window layers (gemma)
// are refused: those layers are not compressed and hold their window at the original positions,
// which renumbering the compressed layers would put after the new positions.
#include <cmath>

#include "kernels/ops.h"
#include "kvsqueeze/error.h"
#include "press/press_registry.h"
#include "press/wrapper_util.h"

namespace kvsqueeze {
namespace {

class KeyRerotationPress : public wrapper::Single {
 public:
  explicit KeyRerotationPress(std::unique_ptr<Press> inner) : Single(std::move(inner)) { reject_deferred("key_rerotation"); }
  std::string name() const override { return "key_rerotation"; }
  LayerScores score(const LayerView& view) override { return inner_->score(view); }
  KeepSets select(const LayerView& view, const Budget& budget) override { return inner_->select(view, budget); }
  KeepSets compress(const LayerView& view, const Budget& budget, KvCache& cache) override {
    const auto& c = view.config();
    for (bool sliding : c.layer_sliding)
      if (sliding)
        throw Error("press 'key_rerotation' cannot renumber positions on a model with sliding-window layers: those "
                    "layers are not compressed and keep their slots at the original positions");
    const KeepSets keep = select(view, budget);
    const auto n = static_cast<int64_t>(keep.at(0).size());
    for (const auto& k : keep)
      if (static_cast<int64_t>(k.size()) != n)
        throw Error("press 'key_rerotation' needs every head to keep the same number of slots; '" + inner_->name() +
                    "' kept different numbers in layer " + std::to_string(view.layer));
    if (view.layer <= layer_seen_) next_ = -1;  // layers come in order: this is a new context
    layer_seen_ = view.layer;
    if (next_ >= 0 && next_ != n)
      throw Error("press 'key_rerotation' needs every layer to keep the same number of slots: layer " + std::to_string(view.layer) +
                  " keeps " + std::to_string(n) + ", an earlier one " + std::to_string(next_));
    compact_layer(cache, view.layer, keep);
    inner_->compacted(view.layer, keep);
    rerotate(view, cache);
    next_ = n;
    return keep;
  }
  int64_t next_position() const override { return next_; }

 private:
  static void rerotate(const LayerView& view, KvCache& cache) {
    const int64_t d = view.head_dim_k(), half = d / 2;
    const auto freq = view.inv_freq();
    const auto style = view.config().rope_neox ? kernels::RopeStyle::Neox : kernels::RopeStyle::Normal;
    std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
    for (int64_t h = 0; h < view.n_head_kv(); ++h) {
      const kernels::KvRun run = cache.run(view.layer, h);
      const LayerView now(view.model, view.layer, std::vector<kernels::KvRun>{run}, view.stats);
      std::vector<float> k = now.keys(0);
      std::vector<int32_t> pos(static_cast<size_t>(run.len));
      for (int64_t i = 0; i < run.len; ++i) {
        const auto delta = static_cast<float>(i - run.pos[i]);
        for (int64_t j = 0; j < half; ++j) {  // fp32 angles, as kvpress computes them
          const float angle = delta * freq[static_cast<size_t>(j)];
          cs[static_cast<size_t>(j)] = std::cos(angle);
          sn[static_cast<size_t>(j)] = std::sin(angle);
        }
        kernels::rope_apply(k.data() + i * d, d, cs.data(), sn.data(), style);
        pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
      }
      cache.rewrite_keys(view.layer, h, k.data(), pos.data());
    }
  }
  int64_t next_ = -1;
  int64_t layer_seen_ = -1;
};

}  // namespace

void register_key_rerotation_press() {
  register_wrapper({"key_rerotation",
                    "Renumbers the kept slots 0..n-1 and re-rotates their keys to match (KeyRerotationPress).",
                    {},
                    1,
                    "Later tokens continue at position n. Every layer and head must keep the same n; refused on models with "
                    "sliding-window layers (gemma), whose uncompressed windows keep their original positions."},
                   [](const PressOptionValues&, PressList inner) { return std::make_unique<KeyRerotationPress>(std::move(inner.at(0))); });
}

}  // namespace kvsqueeze
