#include "kvsqueeze/kv_cache.h"

namespace kvsqueeze {

KvCache clone_cache(const KvCache& cache) {
  KvCache copy(cache.shape(), 0);
  for (int64_t l = 0; l < cache.shape().n_layer; ++l)
    for (int64_t h = 0; h < cache.shape().n_head_kv; ++h)
      copy.assign(l, h, cache.length(l, h), cache.k_bytes(l, h), cache.v_bytes(l, h), cache.positions(l, h).data());
  return copy;
}

}  // namespace kvsqueeze
