// What every storage reports the same way: row sizes and bytes used follow from the shape,
// the lengths and the key channels.
#include "backend/kv_storage.h"

namespace kvsqueeze::backend {

size_t KvStorage::k_row_bytes(int64_t layer, int64_t head) const {
  const size_t channels = key_channels(layer, head).size();
  return kv_key_row_bytes(shape_.k_type, channels == 0 ? shape_.head_dim_k : static_cast<int64_t>(channels));
}

size_t KvStorage::v_row_bytes() const { return kv_row_bytes(shape_.v_type, shape_.head_dim_v); }

// KIVI2 caches: a run of `slots` slots also holds its full key groups' parameters and its
// recent window, the slots % kKiviGroup not yet in a group, as f16 key and value rows.
size_t KvStorage::kivi_extra_bytes(int64_t slots, int64_t k_stride) const {
  if (shape_.k_type != KvType::KIVI2 && shape_.v_type != KvType::KIVI2) return 0;
  const size_t groups = shape_.k_type == KvType::KIVI2 ? static_cast<size_t>(slots / kKiviGroup) * kivi_group_bytes(k_stride) : 0;
  return groups + static_cast<size_t>(slots % kKiviGroup) * static_cast<size_t>(k_stride + shape_.head_dim_v) * 2;
}

size_t KvStorage::bytes_used() const {
  size_t total = 0;
  for (int64_t l = 0; l < shape_.n_layer; ++l)
    for (int64_t h = 0; h < shape_.n_head_kv; ++h)
      total += static_cast<size_t>(length(l, h)) * (k_row_bytes(l, h) + v_row_bytes() + sizeof(int32_t)) +
               kivi_extra_bytes(length(l, h), key_channels(l, h).empty() ? shape_.head_dim_k : static_cast<int64_t>(key_channels(l, h).size()));
  return total;
}

}  // namespace kvsqueeze::backend
