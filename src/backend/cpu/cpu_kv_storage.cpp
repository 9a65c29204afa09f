// The CPU backend's KV storage: the row layout the attention kernels read in place (K, V and
// positions of a run in their own SlotBuffers, row i at i x row bytes).
#include "backend/cpu/cpu_kv_storage.h"

#include <algorithm>
#include <cstring>

#include "kernels/fp16.h"

namespace kvsqueeze::backend {

CpuKvStorage::CpuKvStorage(const KvCacheShape& shape) : KvStorage(shape) {
  runs_.resize(static_cast<size_t>(shape.n_layer * shape.n_head_kv));
}

std::unique_ptr<KvStorage> CpuKvStorage::empty_like() const { return std::make_unique<CpuKvStorage>(shape()); }

std::unique_ptr<KvStorage> CpuKvStorage::clone() const {
  auto copy = std::make_unique<CpuKvStorage>(shape());
  for (size_t i = 0; i < runs_.size(); ++i) {
    const Run& from = runs_[i];
    Run& to = copy->runs_[i];
    to.k_channels = from.k_channels;
    copy->resize(to, from.len);
    to.len = from.len;
    if (from.len == 0) continue;
    std::memcpy(to.k.data(), from.k.data(), static_cast<size_t>(from.len) * k_row_bytes(from));
    std::memcpy(to.v.data(), from.v.data(), static_cast<size_t>(from.len) * v_row_bytes());
    std::memcpy(to.pos.data(), from.pos.data(), static_cast<size_t>(from.len) * sizeof(int32_t));
  }
  return copy;
}

std::span<const int32_t> CpuKvStorage::positions(int64_t layer, int64_t head) const {
  const Run& r = at(layer, head);
  return {r.positions(), static_cast<size_t>(r.len)};
}

std::span<const int32_t> CpuKvStorage::key_channels(int64_t layer, int64_t head) const {
  const Run& r = at(layer, head);
  return {r.k_channels.data(), r.k_channels.size()};
}

size_t CpuKvStorage::k_row_bytes(const Run& r) const {
  return (r.k_channels.empty() ? static_cast<size_t>(shape().head_dim_k) : r.k_channels.size()) * kv_type_bytes(shape().type);
}

void CpuKvStorage::resize(Run& r, int64_t cap) const {
  Run next;
  next.k_channels = r.k_channels;
  const size_t kb = k_row_bytes(r);
  next.k = SlotBuffer(static_cast<size_t>(cap) * kb);
  next.v = SlotBuffer(static_cast<size_t>(cap) * v_row_bytes());
  next.pos = SlotBuffer(static_cast<size_t>(cap) * sizeof(int32_t));
  next.cap = cap;
  next.len = std::min(r.len, cap);
  if (next.len > 0) {
    std::memcpy(next.k.data(), r.k.data(), static_cast<size_t>(next.len) * kb);
    std::memcpy(next.v.data(), r.v.data(), static_cast<size_t>(next.len) * v_row_bytes());
    std::memcpy(next.pos.data(), r.pos.data(), static_cast<size_t>(next.len) * sizeof(int32_t));
  }
  r = std::move(next);
}

void CpuKvStorage::set_capacity(int64_t layer, int64_t head, int64_t cap) { resize(at(layer, head), cap); }

namespace {
void store_row(const float* src, int64_t d, KvType type, uint8_t* dst, const std::vector<int32_t>* channels = nullptr) {
  if (channels && !channels->empty()) {  // a channel-pruned key: only the stored channels
    const size_t e = kv_type_bytes(type);
    float x = 0;
    for (size_t i = 0; i < channels->size(); ++i) {
      x = src[(*channels)[i]];
      store_row(&x, 1, type, dst + i * e);
    }
    return;
  }
  switch (type) {
    case KvType::F32: std::memcpy(dst, src, static_cast<size_t>(d) * 4); return;
    case KvType::F16: {
      auto* out = reinterpret_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < d; ++i) out[i] = kernels::fp32_to_fp16(src[i]);
      return;
    }
    case KvType::BF16: {
      auto* out = reinterpret_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < d; ++i) out[i] = kernels::fp32_to_bf16(src[i]);
      return;
    }
  }
}
}  // namespace

void CpuKvStorage::append(int64_t layer, int64_t n, const float* k, const float* v, const int32_t* pos) {
  const int64_t dk = shape().head_dim_k, dv = shape().head_dim_v, hkv = shape().n_head_kv;
  for (int64_t h = 0; h < hkv; ++h) {
    Run& r = at(layer, h);
    for (int64_t t = 0; t < n; ++t) {
      store_row(k + (t * hkv + h) * dk, dk, shape().type, r.k.data() + static_cast<size_t>(r.len + t) * k_row_bytes(r), &r.k_channels);
      store_row(v + (t * hkv + h) * dv, dv, shape().type, r.v.data() + static_cast<size_t>(r.len + t) * v_row_bytes());
      r.positions()[r.len + t] = pos[t];
    }
    r.len += n;
  }
}

void CpuKvStorage::compact(int64_t layer, int64_t head, std::span<const int32_t> keep) {
  Run& r = at(layer, head);
  const size_t kb = k_row_bytes(r), vb = v_row_bytes();
  int64_t out = 0;
  for (int32_t slot : keep) {
    if (slot != out) {  // rows only move down, so copying forward in place is safe
      std::memmove(r.k.data() + static_cast<size_t>(out) * kb, r.k.data() + static_cast<size_t>(slot) * kb, kb);
      std::memmove(r.v.data() + static_cast<size_t>(out) * vb, r.v.data() + static_cast<size_t>(slot) * vb, vb);
      r.positions()[out] = r.positions()[slot];
    }
    ++out;
  }
  r.len = out;
}

void CpuKvStorage::drop_front(int64_t layer, int64_t head, int64_t n) {
  Run& r = at(layer, head);
  if (n <= 0) return;
  const int64_t keep = r.len - n;
  std::memmove(r.k.data(), r.k.data() + static_cast<size_t>(n) * k_row_bytes(r), static_cast<size_t>(keep) * k_row_bytes(r));
  std::memmove(r.v.data(), r.v.data() + static_cast<size_t>(n) * v_row_bytes(), static_cast<size_t>(keep) * v_row_bytes());
  std::memmove(r.positions(), r.positions() + n, static_cast<size_t>(keep) * sizeof(int32_t));
  r.len = keep;
}

void CpuKvStorage::rewrite_rows(int64_t layer, int64_t head, int64_t first, int64_t n, const float* keys, const float* values,
                                const int32_t* pos) {
  Run& r = at(layer, head);
  for (int64_t j = first; j < first + n; ++j) {
    if (keys) store_row(keys + (j - first) * shape().head_dim_k, shape().head_dim_k, shape().type,
                        r.k.data() + static_cast<size_t>(j) * k_row_bytes(r), &r.k_channels);
    if (values) store_row(values + (j - first) * shape().head_dim_v, shape().head_dim_v, shape().type,
                          r.v.data() + static_cast<size_t>(j) * v_row_bytes());
    if (pos) r.positions()[j] = pos[j - first];
  }
}

void CpuKvStorage::keep_key_channels(int64_t layer, int64_t head, std::span<const int32_t> channels) {
  Run& r = at(layer, head);
  // Where each kept channel sits in the current rows.
  std::vector<size_t> from(channels.size());
  for (size_t i = 0; i < channels.size(); ++i)
    from[i] = r.k_channels.empty() ? static_cast<size_t>(channels[i])
                                   : static_cast<size_t>(std::lower_bound(r.k_channels.begin(), r.k_channels.end(), channels[i]) -
                                                         r.k_channels.begin());
  const size_t e = kv_type_bytes(shape().type), old_row = k_row_bytes(r), new_row = channels.size() * e;
  SlotBuffer k(static_cast<size_t>(r.cap) * new_row);
  for (int64_t j = 0; j < r.len; ++j)
    for (size_t i = 0; i < from.size(); ++i)
      std::memcpy(k.data() + static_cast<size_t>(j) * new_row + i * e, r.k.data() + static_cast<size_t>(j) * old_row + from[i] * e, e);
  r.k = std::move(k);
  r.k_channels.assign(channels.begin(), channels.end());
  if (r.k_channels.size() == static_cast<size_t>(shape().head_dim_k)) r.k_channels.clear();  // all of them
}

void CpuKvStorage::assign(int64_t layer, int64_t head, int64_t len, const uint8_t* k, const uint8_t* v, const int32_t* pos,
                          std::span<const int32_t> k_channels) {
  Run& r = at(layer, head);
  r.len = 0;
  if (!std::equal(k_channels.begin(), k_channels.end(), r.k_channels.begin(), r.k_channels.end())) {
    r.k_channels.assign(k_channels.begin(), k_channels.end());
    r.k = SlotBuffer(static_cast<size_t>(r.cap) * k_row_bytes(r));
  }
  if (len > r.cap) resize(r, len);
  if (len > 0) {
    std::memcpy(r.k.data(), k, static_cast<size_t>(len) * k_row_bytes(r));
    std::memcpy(r.v.data(), v, static_cast<size_t>(len) * v_row_bytes());
    std::memcpy(r.pos.data(), pos, static_cast<size_t>(len) * sizeof(int32_t));
  }
  r.len = len;
}

KvRun CpuKvStorage::host_run(int64_t layer, int64_t head) const {
  const Run& r = at(layer, head);
  KvRun out;
  out.k = r.k.data();
  out.v = r.v.data();
  out.pos = r.positions();
  out.len = r.len;
  out.k_stride = r.k_channels.empty() ? shape().head_dim_k : static_cast<int64_t>(r.k_channels.size());
  out.k_channels = r.k_channels.empty() ? nullptr : r.k_channels.data();
  out.v_stride = shape().head_dim_v;
  out.type = shape().type == KvType::F32 ? KvElement::F32
             : shape().type == KvType::F16 ? KvElement::F16
                                           : KvElement::BF16;
  return out;
}

size_t CpuKvStorage::bytes_held() const {
  size_t total = 0;
  for (const auto& r : runs_) total += r.k.size() + r.v.size() + r.pos.size();
  return total;
}

}  // namespace kvsqueeze::backend
