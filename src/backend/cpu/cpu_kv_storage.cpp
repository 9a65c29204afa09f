// The CPU backend's KV storage: the row layout the attention kernels read in place (K, V and
// positions of a run in their own SlotBuffers, row i at i x row bytes).
#include "backend/cpu/cpu_kv_storage.h"

#include <algorithm>
#include <cstring>

#include "kernels/fp16.h"
#include "kernels/hadamard.h"
#include "kernels/kv_quantize.h"
#include "kernels/kv_rows.h"

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
    to.k_offset = from.k_offset;
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

std::span<const float> CpuKvStorage::key_offset(int64_t layer, int64_t head) const {
  const Run& r = at(layer, head);
  return {r.k_offset.data(), r.k_offset.size()};
}

size_t CpuKvStorage::k_row_bytes(const Run& r) const {
  return kv_row_bytes(shape().k_type, r.k_channels.empty() ? shape().head_dim_k : static_cast<int64_t>(r.k_channels.size()));
}

void CpuKvStorage::resize(Run& r, int64_t cap) const {
  Run next;
  next.k_channels = r.k_channels;
  next.k_offset = r.k_offset;
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
// Writes d floats as one row of `type` (quantized types: whole blocks, d a multiple of 32).
void encode_row(const float* src, int64_t d, KvType type, uint8_t* dst) {
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
    case KvType::Q8_0: kernels::quantize_row_q8_0(src, dst, d); return;
    case KvType::Q4_0: kernels::quantize_row_q4_0(src, dst, d); return;
  }
}
}  // namespace

// Stores a key row of head_dim_k floats: a channel-pruned run keeps only its channels; a full
// one takes its offset off (centred) and is rotated (rotated caches) first.
void CpuKvStorage::store_key(const Run& r, const float* src, uint8_t* dst) const {
  const int64_t d = shape().head_dim_k;
  if (r.k_channels.empty() && r.k_offset.empty() && !shape().k_rotated) return encode_row(src, d, shape().k_type, dst);
  std::vector<float> row;
  if (!r.k_channels.empty()) {
    for (int32_t c : r.k_channels) row.push_back(src[c]);
  } else {
    row.assign(src, src + d);
    for (size_t i = 0; i < r.k_offset.size(); ++i) row[i] -= r.k_offset[i];
    if (shape().k_rotated) kernels::hadamard_rotate(row.data(), d);
  }
  encode_row(row.data(), static_cast<int64_t>(row.size()), shape().k_type, dst);
}

// A centred run's offset: the per-channel mean of the first keys it stores (n rows, `stride`
// floats apart), taken once, when they are appended to the empty run. A run that holds keys
// stored without an offset keeps storing them so.
void CpuKvStorage::take_offset(Run& r, const float* k, int64_t n, int64_t stride) const {
  if (!shape().k_centered || !r.k_channels.empty() || !r.k_offset.empty() || r.len > 0 || n == 0) return;
  const int64_t d = shape().head_dim_k;
  std::vector<double> sum(static_cast<size_t>(d), 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < d; ++i) sum[static_cast<size_t>(i)] += k[t * stride + i];
  r.k_offset.resize(static_cast<size_t>(d));
  for (int64_t i = 0; i < d; ++i) r.k_offset[static_cast<size_t>(i)] = static_cast<float>(sum[static_cast<size_t>(i)] / static_cast<double>(n));
}

// Stores a value row of head_dim_v floats, rotated first when the cache rotates values.
void CpuKvStorage::store_value(const float* src, uint8_t* dst) const {
  const int64_t d = shape().head_dim_v;
  if (!shape().v_rotated) return encode_row(src, d, shape().v_type, dst);
  std::vector<float> row(src, src + d);
  kernels::hadamard_rotate(row.data(), d);
  encode_row(row.data(), d, shape().v_type, dst);
}

void CpuKvStorage::append(int64_t layer, int64_t n, const float* k, const float* v, const int32_t* pos) {
  const int64_t dk = shape().head_dim_k, dv = shape().head_dim_v, hkv = shape().n_head_kv;
  for (int64_t h = 0; h < hkv; ++h) {
    Run& r = at(layer, h);
    take_offset(r, k + h * dk, n, hkv * dk);
    for (int64_t t = 0; t < n; ++t) {
      store_key(r, k + (t * hkv + h) * dk, r.k.data() + static_cast<size_t>(r.len + t) * k_row_bytes(r));
      store_value(v + (t * hkv + h) * dv, r.v.data() + static_cast<size_t>(r.len + t) * v_row_bytes());
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
    if (keys) store_key(r, keys + (j - first) * shape().head_dim_k, r.k.data() + static_cast<size_t>(j) * k_row_bytes(r));
    if (values) store_value(values + (j - first) * shape().head_dim_v, r.v.data() + static_cast<size_t>(j) * v_row_bytes());
    if (pos) r.positions()[j] = pos[j - first];
  }
}

void CpuKvStorage::keep_key_channels(int64_t layer, int64_t head, std::span<const int32_t> channels) {
  Run& r = at(layer, head);
  // Each key read back as it was given (rotated back, offset added), its kept channels gathered
  // and stored as they are: exact for the float types; quantized keys are quantized anew over
  // the kept channels (whole blocks, KvCache checks). A rotation mixes all channels, so pruned
  // runs are stored neither rotated nor centred.
  const KvType type = shape().k_type;
  const int64_t d = shape().head_dim_k;
  const KvRun before = host_run(layer, head);
  const size_t new_row = kv_row_bytes(type, static_cast<int64_t>(channels.size()));
  SlotBuffer k(static_cast<size_t>(r.cap) * new_row);
  std::vector<float> row(static_cast<size_t>(d)), kept(channels.size());
  for (int64_t j = 0; j < r.len; ++j) {
    kernels::key_row_to_f32(before, j, d, row.data());
    for (size_t i = 0; i < channels.size(); ++i) kept[i] = row[static_cast<size_t>(channels[i])];
    encode_row(kept.data(), static_cast<int64_t>(kept.size()), type, k.data() + static_cast<size_t>(j) * new_row);
  }
  r.k = std::move(k);
  r.k_offset.clear();
  r.k_channels.assign(channels.begin(), channels.end());
  if (r.k_channels.size() == static_cast<size_t>(shape().head_dim_k)) r.k_channels.clear();  // all of them
}

void CpuKvStorage::assign(int64_t layer, int64_t head, int64_t len, const uint8_t* k, const uint8_t* v, const int32_t* pos,
                          std::span<const int32_t> k_channels, std::span<const float> k_offset) {
  Run& r = at(layer, head);
  r.len = 0;
  r.k_offset.assign(k_offset.begin(), k_offset.end());
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
  out.k_type = shape().k_type;
  out.v_type = shape().v_type;
  out.k_rotated = rotated(r);
  out.k_offset = r.k_offset.empty() ? nullptr : r.k_offset.data();
  out.v_rotated = shape().v_rotated;
  return out;
}

size_t CpuKvStorage::bytes_held() const {
  size_t total = 0;
  for (const auto& r : runs_) total += r.k.size() + r.v.size() + r.pos.size();
  return total;
}

}  // namespace kvsqueeze::backend
