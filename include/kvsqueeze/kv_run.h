#pragma once
// A host-readable view of one (layer, KV head) run of cached slots: what the CPU backend's
// attention reads and what the cache lends to readers that need the stored rows as they are
// (cache files, tests). Presses read runs through LayerView's accessors instead.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>

namespace kvsqueeze {

// The element type of cached keys or values. Q8_0 and Q4_0 are llama.cpp's block layouts
// (32 elements per block: an f16 scale, then 32 int8 or 16 bytes of 4-bit values), so a row's
// length must be a multiple of 32 for them. KIVI2 is KIVI's 2-bit asymmetric quantization
// (kernels/kv_quantize.h): keys per channel over groups of 32 slots, values per token in blocks
// of 32 channels, and the run's newest slots (fewer than 32) kept in f16 until a group fills.
enum class KvType { F32, F16, BF16, Q8_0, Q4_0, KIVI2 };

// Slots per KIVI key group, and the most slots a run keeps in its f16 recent window.
constexpr int64_t kKiviGroup = 32;

// Elements per block: 1 for the float types, 32 for the quantized ones.
constexpr int64_t kv_block_elems(KvType type) { return type == KvType::F32 || type == KvType::F16 || type == KvType::BF16 ? 1 : 32; }
// Bytes of one value row of `d` elements (d a multiple of kv_block_elems); KIVI2: per 32
// elements an f16 scale, an f16 minimum and 8 bytes of 2-bit codes.
constexpr size_t kv_row_bytes(KvType type, int64_t d) {
  switch (type) {
    case KvType::F32: return static_cast<size_t>(d) * 4;
    case KvType::F16:
    case KvType::BF16: return static_cast<size_t>(d) * 2;
    case KvType::Q8_0: return static_cast<size_t>(d / 32) * 34;
    case KvType::Q4_0: return static_cast<size_t>(d / 32) * 18;
    case KvType::KIVI2: return static_cast<size_t>(d / 32) * 12;
  }
  return 0;
}
// Bytes of one key row: as a value row, except KIVI2 keys, whose rows hold only their 2-bit
// codes (d / 4 bytes); each group of 32 slots has its per-channel scales and minima apart.
constexpr size_t kv_key_row_bytes(KvType type, int64_t d) {
  return type == KvType::KIVI2 ? static_cast<size_t>(d) / 4 : kv_row_bytes(type, d);
}
// Bytes of one KIVI2 key group's parameters: f16 scales for the d channels, then f16 minima.
constexpr size_t kivi_group_bytes(int64_t d) { return static_cast<size_t>(d) * 4; }
constexpr bool kv_type_quantized(KvType type) { return kv_block_elems(type) > 1; }

// One KV head's cached slots: key row i at k + i * kv_key_row_bytes(k_type, k_stride), value
// row i at v + i * kv_row_bytes(v_type, v_stride), position pos[i] (for slots before
// recent_first; the recent window's rows are apart, see below).
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
  // KIVI2 keys: slot i's codes belong to group (k_phase + i) / kKiviGroup, whose per-channel
  // scales and minima (kivi_group_bytes) start at k_groups + group * kivi_group_bytes(k_stride).
  const uint8_t* k_groups = nullptr;
  int64_t k_phase = 0;
  // Slots from recent_first on (runs holding a KIVI2 type) are the recent window: key and value
  // rows in f16, as the run stores them otherwise (rotated, centred), at k_recent and v_recent,
  // row i - recent_first. No window: the largest int64_t.
  int64_t recent_first = std::numeric_limits<int64_t>::max();
  const uint16_t* k_recent = nullptr;
  const uint16_t* v_recent = nullptr;

  const uint8_t* k_row(int64_t i) const { return static_cast<const uint8_t*>(k) + static_cast<size_t>(i) * kv_key_row_bytes(k_type, k_stride); }
  const uint8_t* v_row(int64_t i) const { return static_cast<const uint8_t*>(v) + static_cast<size_t>(i) * kv_row_bytes(v_type, v_stride); }
  bool in_recent(int64_t i) const { return i >= recent_first; }

  // Slots [b, e) of this run as a run of their own.
  KvRun slots(int64_t b, int64_t e) const {
    KvRun r = *this;
    r.k = k_row(b);
    r.v = v_row(b);
    r.pos = pos + b;
    r.len = e - b;
    r.k_phase = k_phase + b;
    if (recent_first != std::numeric_limits<int64_t>::max()) r.recent_first = recent_first - b;
    return r;
  }
};

// A run's rows lent with an owner that keeps their memory alive after the run changes or its cache
// is gone: while an owner lives, the storage writes to a fresh copy instead of the lent memory
// (copy on write). A null owner: this storage cannot lend (a device's staged host copy), and the
// rows are valid only until the run changes, as KvCache::run's.
struct LentRun {
  KvRun rows;
  std::shared_ptr<const void> owner;
};

}  // namespace kvsqueeze
