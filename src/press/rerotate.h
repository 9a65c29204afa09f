#pragma once
// Key re-rotation shared by key_rerotation and finch (rerotate_keys): after a layer was
// compacted, its kept slots are renumbered 0..n-1 in position order and each key is rotated by
// delta = i - p_i (RoPE angles delta * inv_freq in fp32, the layer's frequencies), as if the kept
// tokens had been contiguous. Later tokens continue at position n (Press::next_position()).
#include <string>

#include "kvsqueeze/press.h"

namespace kvsqueeze::rerotate {

// Renumbers the slots of view.layer in `cache` 0..n-1 and re-rotates their keys.
void apply(const LayerView& view, KvCache& cache);

// The per-context bookkeeping of a re-rotating press: every compressed layer and head must keep
// the same n; the last n is where later tokens go.
class Renumbering {
 public:
  explicit Renumbering(std::string press) : press_(std::move(press)) {}
  // Throws when the model has sliding-window layers (their uncompressed windows keep their
  // original positions). `hint` is appended to the message.
  void refuse_sliding(const LayerView& view, const std::string& hint = "") const;
  // Checks `keep` (the layer's selection, `inner` names who made it) and records its n.
  void check(const LayerView& view, const KeepSets& keep, const std::string& inner);
  int64_t next_position() const { return next_; }

 private:
  std::string press_;
  int64_t next_ = -1;
  int64_t layer_seen_ = -1;
};

}  // namespace kvsqueeze::rerotate
