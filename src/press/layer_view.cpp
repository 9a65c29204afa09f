// LayerView: a press's read-only window on one layer's runs. Rows come from the cache's host
// view of its storage, or from rows the view owns; every read converts through the host
// helpers, with the same arithmetic as the attention kernels.
#include <algorithm>
#include <cmath>

#include "backend/host_math.h"
#include "kvsqueeze/kv_run_decode.h"
#include "kvsqueeze/press.h"
#include "model/model_weights.h"

namespace kvsqueeze {

LayerView::LayerView(const Model& m, int64_t l, const KvCache& cache, const LayerStats& s) : model(m), layer(l), stats(s) {
  for (int64_t h = 0; h < cache.shape().n_head_kv; ++h) runs_.push_back(cache.run(l, h));
}

LayerView::LayerView(const LayerView& full, const std::vector<int64_t>& begin, const std::vector<int64_t>& end, const LayerStats& s)
    : model(full.model), layer(full.layer), stats(s), runs_(full.runs_), owned_(full.owned_) {
  for (size_t h = 0; h < runs_.size(); ++h) {
    auto& r = runs_[h];
    const int64_t b = std::clamp<int64_t>(begin.at(h), 0, r.len), e = std::clamp<int64_t>(end.at(h), b, r.len);
    r = r.slots(b, e);
  }
}

LayerView::LayerView(const Model& m, int64_t l, OwnedRows rows, const LayerStats& s)
    : model(m), layer(l), stats(s), owned_(std::make_shared<const OwnedRows>(std::move(rows))) {
  for (size_t h = 0; h < owned_->positions.size(); ++h) {
    KvRun r;
    r.k = owned_->keys[h].data();
    r.v = owned_->values[h].data();
    r.pos = owned_->positions[h].data();
    r.len = static_cast<int64_t>(owned_->positions[h].size());
    r.k_stride = head_dim_k();
    r.v_stride = head_dim_v();
    r.k_type = KvType::F32;
    r.v_type = KvType::F32;
    runs_.push_back(r);
  }
}

void LayerView::key_row(int64_t h, int64_t slot, float* dst) const {
  host::key_row(runs_[static_cast<size_t>(h)], slot, head_dim_k(), dst);
}
void LayerView::value_row(int64_t h, int64_t slot, float* dst) const {
  host::value_row(runs_[static_cast<size_t>(h)], slot, head_dim_v(), dst);
}
float LayerView::key_dot(int64_t h, int64_t slot, const float* q) const {
  return host::key_dot(runs_[static_cast<size_t>(h)], slot, head_dim_k(), q);
}

// Every run's v_stride is head_dim_v, so the run decoders give exactly these rows.
std::vector<float> LayerView::keys(int64_t h) const { return run_keys_f32(runs_[static_cast<size_t>(h)], head_dim_k()); }  // pruned channels read 0
std::vector<float> LayerView::values(int64_t h) const { return run_values_f32(runs_[static_cast<size_t>(h)]); }

std::span<const float> LayerView::inv_freq() const {
  const auto& w = model.weights();
  return config().layer_sliding[static_cast<size_t>(layer)] ? std::span<const float>(w.inv_freq_local)
                                                            : std::span<const float>(w.inv_freq_global);
}

std::vector<float> LayerView::pre_rope_keys(int64_t h) const {
  std::vector<float> k = keys(h);
  const int64_t d = head_dim_k(), half = d / 2, len = length(h);
  const auto pos = positions(h);
  const auto freq = inv_freq();
  const auto style = host::rope_style(config().rope_neox);
  std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
  for (int64_t j = 0; j < len; ++j) {
    for (int64_t i = 0; i < half; ++i) {  // rotating by -angle undoes the rotation
      const double angle = static_cast<double>(pos[static_cast<size_t>(j)]) * freq[static_cast<size_t>(i)];
      c[static_cast<size_t>(i)] = static_cast<float>(std::cos(angle));
      s[static_cast<size_t>(i)] = static_cast<float>(-std::sin(angle));
    }
    host::rope_apply(k.data() + j * d, d, c.data(), s.data(), style);
  }
  return k;
}

}  // namespace kvsqueeze
