#include "cache_views.h"

#include <limits>
#include <string>
#include <utility>

#include "kvsqueeze/error.h"
#include "kvsqueeze/kv_run_decode.h"

namespace nb = nanobind;

namespace kvsqueeze::python {
namespace {

void check_run(int64_t n_layer, int64_t n_head_kv, int64_t layer, int64_t head) {
  if (layer < 0 || layer >= n_layer)
    throw ParameterError("layer", "`layer` must be in [0, " + std::to_string(n_layer) + "), got " + std::to_string(layer));
  if (head < 0 || head >= n_head_kv)
    throw ParameterError("head", "`head` must be in [0, " + std::to_string(n_head_kv) + "), got " + std::to_string(head));
}

// An array over `data`, alive while `owner` is (the capsule holds it); cols 0: one dimension.
ReadOnlyArray array_over(const void* data, std::shared_ptr<const void> owner, size_t rows, size_t cols, nb::dlpack::dtype dtype) {
  auto* held = new std::shared_ptr<const void>(std::move(owner));
  nb::capsule capsule(held, [](void* p) noexcept { delete static_cast<std::shared_ptr<const void>*>(p); });
  const size_t shape[2] = {rows, cols};
  return ReadOnlyArray(data, cols ? 2 : 1, shape, capsule, nullptr, dtype);
}

template <class T>
ReadOnlyArray array_of(std::shared_ptr<const std::vector<T>> data, size_t rows, size_t cols) {
  const T* p = data->data();
  return array_over(p, std::move(data), rows, cols, nb::dtype<T>());
}

template <class T>
std::shared_ptr<const std::vector<T>> held(std::vector<T> v) {
  return std::make_shared<const std::vector<T>>(std::move(v));
}

constexpr nb::dlpack::dtype kFloat16{static_cast<uint8_t>(nb::dlpack::dtype_code::Float), 16, 1};

// Rows stored as `type` exactly as the model's keys or values are, in one block numpy can view.
bool plain_rows(KvType type, bool transformed, const KvRun& run) {
  return (type == KvType::F16 || type == KvType::F32) && !transformed && run.recent_first == std::numeric_limits<int64_t>::max();
}

nb::dlpack::dtype float_dtype(KvType type) { return type == KvType::F16 ? kFloat16 : nb::dtype<float>(); }

}  // namespace

RunArrays::RunArrays(const KvCache& cache, int64_t layer, int64_t head) {
  check_run(cache.shape().n_layer, cache.shape().n_head_kv, layer, head);
  head_dim_k_ = cache.shape().head_dim_k;
  lent_ = cache.lend(layer, head);
  if (lent_.owner) return;
  const KvRun& run = lent_.rows;  // a staged copy, valid only until the run changes: decode it now
  keys_ = held(run_keys_f32(run, head_dim_k_));
  values_ = held(run_values_f32(run));
  positions_ = held(std::vector<int32_t>(run.pos, run.pos + run.len));
  lent_.rows = KvRun{.len = run.len, .v_stride = run.v_stride};
}

ReadOnlyArray RunArrays::get(CachePart part) const {
  const KvRun& run = lent_.rows;
  const auto len = static_cast<size_t>(run.len);
  switch (part) {
    case CachePart::Positions:
      if (positions_) return array_of(positions_, len, 0);
      return array_over(run.pos, lent_.owner, len, 0, nb::dtype<int32_t>());
    case CachePart::Keys:
      if (keys_) return array_of(keys_, len, static_cast<size_t>(head_dim_k_));
      if (plain_rows(run.k_type, run.k_rotated || run.k_offset || run.k_channels, run))
        return array_over(run.k, lent_.owner, len, static_cast<size_t>(run.k_stride), float_dtype(run.k_type));
      return array_of(held(run_keys_f32(run, head_dim_k_)), len, static_cast<size_t>(head_dim_k_));
    case CachePart::Values:
      if (values_) return array_of(values_, len, static_cast<size_t>(run.v_stride));
      if (plain_rows(run.v_type, run.v_rotated, run))
        return array_over(run.v, lent_.owner, len, static_cast<size_t>(run.v_stride), float_dtype(run.v_type));
      return array_of(held(run_values_f32(run)), len, static_cast<size_t>(run.v_stride));
  }
  return {};
}

CacheSnapshot::CacheSnapshot(const KvCache& cache) : n_layer_(cache.shape().n_layer), n_head_kv_(cache.shape().n_head_kv) {
  runs_.reserve(static_cast<size_t>(n_layer_ * n_head_kv_));
  for (int64_t l = 0; l < n_layer_; ++l)
    for (int64_t h = 0; h < n_head_kv_; ++h) runs_.emplace_back(cache, l, h);
}

ReadOnlyArray CacheSnapshot::get(CachePart part, int64_t layer, int64_t head) const {
  check_run(n_layer_, n_head_kv_, layer, head);
  return runs_[static_cast<size_t>(layer * n_head_kv_ + head)].get(part);
}

const char* cache_array_doc(CachePart part) {
  switch (part) {
    case CachePart::Keys:
      return "One KV head's cached keys (post-RoPE), slots x head_dim_k, read-only. A zero-copy view in the cache's own "
             "type where it stores them plainly (f16 -> float16, f32 -> float32); otherwise (bf16, quantized, rotated, "
             "centred, channel-pruned, KIVI2) a float32 copy of the decoded keys. A view stays valid and unchanged "
             "while the array lives: the engine writes to a copy of the run instead.";
    case CachePart::Values:
      return "One KV head's cached values, slots x head_dim_v, read-only: a zero-copy view for plain f16/f32 rows, "
             "else a float32 copy of the decoded values (see cache_keys).";
    case CachePart::Positions:
      return "The original positions of one KV head's cached slots (ascending), int32, read-only; a zero-copy view "
             "on the CPU.";
  }
  return "";
}

}  // namespace kvsqueeze::python
