#pragma once
// A host-readable view of one (layer, KV head) run of cached slots: what the CPU backend's
// attention reads and what the cache lends to readers that need the stored rows as they are
// (cache files, tests). Presses read runs through LayerView's accessors instead.
#include <cstdint>

namespace kvsqueeze {

enum class KvElement { F32, F16, BF16 };

// One KV head's cached slots: row i of K/V at k + i*k_stride (elements), position pos[i].
struct KvRun {
  const void* k = nullptr;
  const void* v = nullptr;
  const int32_t* pos = nullptr;
  int64_t len = 0;
  int64_t k_stride = 0;
  int64_t v_stride = 0;
  KvElement type = KvElement::F16;
  // Non-null: each key row holds only these k_stride channels of the head_dim_k (ascending;
  // ThinK key-channel pruning); the other channels count as zero, so q.k sums over these.
  const int32_t* k_channels = nullptr;
};

}  // namespace kvsqueeze
