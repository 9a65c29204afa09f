#include "press/rerotate.h"

#include <cmath>

#include "backend/host_math.h"
#include "kvsqueeze/error.h"

namespace kvsqueeze::rerotate {

void apply(const LayerView& view, KvCache& cache) {
  const int64_t d = view.head_dim_k(), half = d / 2;
  const auto freq = view.inv_freq();
  const auto style = host::rope_style(view.config().rope_neox);
  std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
  for (int64_t h = 0; h < view.n_head_kv(); ++h) {
    const LayerView now(view.model, view.layer, cache, view.stats);  // the run as compacted
    std::vector<float> k = now.keys(h);
    const auto at = now.positions(h);
    std::vector<int32_t> pos(at.size());
    for (int64_t i = 0; i < now.length(h); ++i) {
      const auto delta = static_cast<float>(i - at[static_cast<size_t>(i)]);
      for (int64_t j = 0; j < half; ++j) {  // fp32 angles, as kvpress computes them
        const float angle = delta * freq[static_cast<size_t>(j)];
        cs[static_cast<size_t>(j)] = std::cos(angle);
        sn[static_cast<size_t>(j)] = std::sin(angle);
      }
      host::rope_apply(k.data() + i * d, d, cs.data(), sn.data(), style);
      pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    }
    cache.rewrite_keys(view.layer, h, k.data(), pos.data());
  }
}

void Renumbering::refuse_sliding(const LayerView& view, const std::string& hint) const {
  for (bool sliding : view.config().layer_sliding)
    if (sliding)
      throw Error("press '" + press_ + "' cannot renumber positions on a model with sliding-window layers: those "
                  "layers are not compressed and keep their slots at the original positions" + hint);
}

void Renumbering::check(const LayerView& view, const KeepSets& keep, const std::string& inner) {
  const auto n = static_cast<int64_t>(keep.at(0).size());
  for (const auto& k : keep)
    if (static_cast<int64_t>(k.size()) != n)
      throw Error("press '" + press_ + "' needs every head to keep the same number of slots; '" + inner +
                  "' kept different numbers in layer " + std::to_string(view.layer));
  if (view.layer <= layer_seen_) next_ = -1;  // layers come in order: this is a new context
  layer_seen_ = view.layer;
  if (next_ >= 0 && next_ != n)
    throw Error("press '" + press_ + "' needs every layer to keep the same number of slots: layer " + std::to_string(view.layer) +
                " keeps " + std::to_string(n) + ", an earlier one " + std::to_string(next_));
  next_ = n;
}

}  // namespace kvsqueeze::rerotate
