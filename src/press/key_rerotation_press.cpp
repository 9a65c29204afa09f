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
#include "press/press_registry.h"
#include "press/rerotate.h"
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
    renumbering_.refuse_sliding(view);
    const KeepSets keep = select(view, budget);
    renumbering_.check(view, keep, inner_->name());
    compact_layer(cache, view.layer, keep);
    inner_->compacted(view.layer, keep);
    rerotate::apply(view, cache);
    next_position_ = renumbering_.next_position();
    return keep;
  }

 private:
  rerotate::Renumbering renumbering_{"key_rerotation"};
};

}  // namespace

void register_key_rerotation_press() {
  register_wrapper({"key_rerotation",
                    "Renumbers the kept slots 0..n-1 and re-rotates their keys to match (KeyRerotationPress).",
                    {},
                    1,
                    "Later tokens continue at position n. Every layer and head must keep the same n; refused on models with "
                    "sliding-window layers (gemma), whose uncompressed windows keep their original positions."},
                   [](PressList inner) { return std::make_unique<KeyRerotationPress>(std::move(inner.at(0))); });
}

}  // namespace kvsqueeze
