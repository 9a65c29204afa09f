#include "cache_views.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"

namespace nb = nanobind;

namespace kvsqueeze::python {
namespace {

using ReadOnlyArray = nb::ndarray<nb::numpy, nb::ro>;

void check_run(const KvCache& cache, int64_t layer, int64_t head) {
  const KvCacheShape& s = cache.shape();
  if (layer < 0 || layer >= s.n_layer)
    throw ParameterError("layer", "`layer` must be in [0, " + std::to_string(s.n_layer) + "), got " + std::to_string(layer));
  if (head < 0 || head >= s.n_head_kv)
    throw ParameterError("head", "`head` must be in [0, " + std::to_string(s.n_head_kv) + "), got " + std::to_string(head));
}

// An array over `data`, alive while `owner` is (the capsule holds it).
ReadOnlyArray array_over(const void* data, std::shared_ptr<const void> owner, size_t rows, size_t cols, nb::dlpack::dtype dtype) {
  auto* held = new std::shared_ptr<const void>(std::move(owner));
  nb::capsule capsule(held, [](void* p) noexcept { delete static_cast<std::shared_ptr<const void>*>(p); });
  const size_t shape[2] = {rows, cols};
  return ReadOnlyArray(data, cols ? 2 : 1, shape, capsule, nullptr, dtype);
}

template <class T>
ReadOnlyArray owned_copy(std::vector<T> data, size_t rows, size_t cols) {
  auto held = std::make_shared<const std::vector<T>>(std::move(data));
  return array_over(held->data(), held, rows, cols, nb::dtype<T>());
}

constexpr nb::dlpack::dtype kFloat16{static_cast<uint8_t>(nb::dlpack::dtype_code::Float), 16, 1};

// The numpy type of rows stored as `type` exactly as the head's keys or values are: f16 and f32
// rows that are not rotated, centred, channel-pruned or split by a KIVI2 recent window.
bool plain_rows(KvType type, bool transformed, const KvRun& run) {
  return (type == KvType::F16 || type == KvType::F32) && !transformed && run.recent_first == std::numeric_limits<int64_t>::max();
}

}  // namespace

ReadOnlyArray cache_array(const Model& model, const KvCache& cache, CachePart part, int64_t layer, int64_t head) {
  check_run(cache, layer, head);
  LentRun lent = cache.lend(layer, head);
  const KvRun& run = lent.rows;
  const auto len = static_cast<size_t>(run.len);
  if (lent.owner) {  // zero copy
    switch (part) {
      case CachePart::Positions: return array_over(run.pos, lent.owner, len, 0, nb::dtype<int32_t>());
      case CachePart::Keys:
        if (plain_rows(run.k_type, run.k_rotated || run.k_offset || run.k_channels, run))
          return array_over(run.k, lent.owner, len, static_cast<size_t>(run.k_stride),
                            run.k_type == KvType::F16 ? kFloat16 : nb::dtype<float>());
        break;
      case CachePart::Values:
        if (plain_rows(run.v_type, run.v_rotated, run))
          return array_over(run.v, lent.owner, len, static_cast<size_t>(run.v_stride),
                            run.v_type == KvType::F16 ? kFloat16 : nb::dtype<float>());
        break;
    }
  }
  // Decoded (rotated back, offset added, pruned channels as zeros, dequantized) into float32.
  const LayerStats none;
  const LayerView view(model, layer, cache, none);
  switch (part) {
    case CachePart::Keys: return owned_copy(view.keys(head), len, static_cast<size_t>(view.head_dim_k()));
    case CachePart::Values: return owned_copy(view.values(head), len, static_cast<size_t>(view.head_dim_v()));
    case CachePart::Positions: break;
  }
  const auto pos = cache.positions(layer, head);
  return owned_copy(std::vector<int32_t>(pos.begin(), pos.end()), len, 0);
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
