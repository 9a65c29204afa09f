#pragma once
// A host-readable view of one (layer, KV head) run of cached slots: what the CPU backend's
// attention reads and what the cache lends to readers that need the stored rows as they are
// (cache files, tests). Presses read runs through LayerView's accessors instead.
#include <cstddef>
#include <cstdint>

namespace kvsqueeze {

// The element type of cached keys or values. Q8_0 and Q4_0 are llama.cpp's block layouts
// (32 elements per block: an f16 scale, then 32 int8 or 16 bytes of 4-bit values), so a row's
// length must be a multiple of 32 for them.
enum class KvType { F32, F16, BF16, Q8_0, Q4_0 };

// Elements per block: 1 for the float types, 32 for the quantized ones.
constexpr int64_t kv_block_elems(KvType type) { return type == KvType::Q8_0 || type == KvType::Q4_0 ? 32 : 1; }
// Bytes of one row of `d` elements (d a multiple of kv_block_elems).
constexpr size_t kv_row_bytes(KvType type, int64_t d) {
  switch (type) {
    case KvType::F32: return static_cast<size_t>(d) * 4;
    case KvType::F16:
    case KvType::BF16: return static_cast<size_t>(d) * 2;
    case KvType::Q8_0: return static_cast<size_t>(d / 32) * 34;
    case KvType::Q4_0: return static_cast<size_t>(d / 32) * 18;
  }
  return 0;
}
constexpr bool kv_type_quantized(KvType type) { return kv_block_elems(type) > 1; }

// One KV head's cached slots: key row i at k + i * kv_row_bytes(k_type, k_stride), value row i
// likewise, position pos[i].
struct KvRun {
  const void* k = nullptr;
  const void* v = nullptr;
  const int32_t* pos = nullptr;
  int64_t len = 0;
  int64_t k_stride = 0;  // elements per stored key row
  int64_t v_stride = 0;  // elements per value row
  KvType k_type = KvType::F16;
  KvType v_type = KvType::F16;
  // Non-null: each key row holds only these k_stride channels of the head_dim_k (ascending;
  // ThinK key-channel pruning); the other channels count as zero, so q.k sums over these.
  const int32_t* k_channels = nullptr;
  // Key rows stored rotated by the normalised Walsh-Hadamard transform (kernels/hadamard.h):
  // readers rotate them back, attention rotates its queries instead (q.k == Hq.Hk).
  bool k_rotated = false;
  // Value rows stored rotated likewise: readers rotate them back, attention its output.
  bool v_rotated = false;
  // Non-null: the stored keys are key - k_offset (head_dim_k floats); readers add it back after
  // rotating back. Attention needs no correction: q.k_offset is the same for every key of the run.
  const float* k_offset = nullptr;

  const uint8_t* k_row(int64_t i) const { return static_cast<const uint8_t*>(k) + static_cast<size_t>(i) * kv_row_bytes(k_type, k_stride); }
  const uint8_t* v_row(int64_t i) const { return static_cast<const uint8_t*>(v) + static_cast<size_t>(i) * kv_row_bytes(v_type, v_stride); }
};

}  // namespace kvsqueeze
