#pragma once
// The bytes a run of a cache at capacity == length must hold, from the layout alone: per slot a
// key row, a value row and a position; for KIVI2 caches also the parameters of each full group
// of 32 key slots (f16 scale and minimum a channel) and the slots not yet in a group as f16 key
// and value rows (include/kvsqueeze/kv_run.h).
#include <cstddef>
#include <cstdint>

#include "kvsqueeze/kv_cache.h"

namespace kvsqueeze::test_bytes {

inline size_t run_bytes(const KvCache& cache, int64_t l, int64_t h) {
  const auto& sh = cache.shape();
  const auto len = static_cast<size_t>(cache.length(l, h));
  size_t bytes = len * (cache.k_row_bytes(l, h) + cache.v_row_bytes() + 4);
  if (sh.k_type != KvType::KIVI2 && sh.v_type != KvType::KIVI2) return bytes;
  const size_t channels = cache.key_channels(l, h).empty() ? static_cast<size_t>(sh.head_dim_k) : cache.key_channels(l, h).size();
  if (sh.k_type == KvType::KIVI2) bytes += len / 32 * 4 * channels;
  return bytes + len % 32 * (channels + static_cast<size_t>(sh.head_dim_v)) * 2;
}

inline size_t cache_bytes(const KvCache& cache) {
  size_t total = 0;
  for (int64_t l = 0; l < cache.shape().n_layer; ++l)
    for (int64_t h = 0; h < cache.shape().n_head_kv; ++h) total += run_bytes(cache, l, h);
  return total;
}

}  // namespace kvsqueeze::test_bytes
