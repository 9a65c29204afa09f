#include "kvsqueeze/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "kernels/fp16.h"
#include "kvsqueeze/error.h"

namespace kvsqueeze {

const char* kv_type_name(KvType type) {
  switch (type) {
    case KvType::F32: return "f32";
    case KvType::F16: return "f16";
    case KvType::BF16: return "bf16";
  }
  return "?";
}

KvType parse_kv_type(const std::string& name) {
  if (name == "f32") return KvType::F32;
  if (name == "f16") return KvType::F16;
  if (name == "bf16") return KvType::BF16;
  throw Error("unknown KV cache type '" + name + "' (valid: f16, bf16, f32)");
}

size_t kv_type_bytes(KvType type) { return type == KvType::F32 ? 4 : 2; }

KvCache::KvCache(const KvCacheShape& shape, int64_t initial_capacity) : shape_(shape) {
  runs_.resize(static_cast<size_t>(shape.n_layer * shape.n_head_kv));
  for (auto& r : runs_) grow(r, std::max<int64_t>(initial_capacity, 1));
}

void KvCache::set_capacity(Run& r, int64_t cap) {
  // Exact-size vectors, so capacity() is what is really allocated.
  std::vector<uint8_t> k(static_cast<size_t>(cap) * k_row_bytes()), v(static_cast<size_t>(cap) * v_row_bytes());
  std::vector<int32_t> pos(static_cast<size_t>(cap));
  const int64_t n = std::min(r.len, cap);
  if (n > 0) {  // memcpy from an empty vector's null data() is undefined
    std::memcpy(k.data(), r.k.data(), static_cast<size_t>(n) * k_row_bytes());
    std::memcpy(v.data(), r.v.data(), static_cast<size_t>(n) * v_row_bytes());
    std::copy(r.pos.begin(), r.pos.begin() + n, pos.begin());
  }
  r.k = std::move(k);
  r.v = std::move(v);
  r.pos = std::move(pos);
  r.cap = cap;
  r.len = n;
}

void KvCache::grow(Run& r, int64_t min_cap) {
  if (min_cap <= r.cap) return;
  set_capacity(r, std::max(min_cap, r.cap + r.cap / 2));  // x1.5 keeps appends amortised O(1)
}

void KvCache::reserve(int64_t n_more) {
  for (auto& r : runs_)
    if (r.len + n_more > r.cap) set_capacity(r, r.len + n_more);
}

namespace {
void store_row(const float* src, int64_t d, KvType type, uint8_t* dst) {
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

void KvCache::append(int64_t layer, int64_t n, const float* k, const float* v, const int32_t* pos) {
  const int64_t dk = shape_.head_dim_k, dv = shape_.head_dim_v, hkv = shape_.n_head_kv;
  for (int64_t h = 0; h < hkv; ++h) {
    Run& r = at(layer, h);
    if (r.len > 0 && n > 0 && pos[0] <= r.pos[static_cast<size_t>(r.len - 1)])
      throw Error("internal: KV append at position " + std::to_string(pos[0]) + " not after " +
                  std::to_string(r.pos[static_cast<size_t>(r.len - 1)]));
    grow(r, r.len + n);
    for (int64_t t = 0; t < n; ++t) {
      store_row(k + (t * hkv + h) * dk, dk, shape_.type, r.k.data() + static_cast<size_t>(r.len + t) * k_row_bytes());
      store_row(v + (t * hkv + h) * dv, dv, shape_.type, r.v.data() + static_cast<size_t>(r.len + t) * v_row_bytes());
      r.pos[static_cast<size_t>(r.len + t)] = pos[t];
    }
    r.len += n;
  }
}

kernels::KvRun KvCache::run(int64_t layer, int64_t head) const {
  const Run& r = at(layer, head);
  kernels::KvRun out;
  out.k = r.k.data();
  out.v = r.v.data();
  out.pos = r.pos.data();
  out.len = r.len;
  out.k_stride = shape_.head_dim_k;
  out.v_stride = shape_.head_dim_v;
  out.type = shape_.type == KvType::F32 ? kernels::KvElement::F32
             : shape_.type == KvType::F16 ? kernels::KvElement::F16
                                          : kernels::KvElement::BF16;
  return out;
}

int64_t KvCache::length(int64_t layer, int64_t head) const { return at(layer, head).len; }

std::vector<std::vector<int64_t>> KvCache::lengths() const {
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(shape_.n_layer));
  for (int64_t l = 0; l < shape_.n_layer; ++l)
    for (int64_t h = 0; h < shape_.n_head_kv; ++h) out[static_cast<size_t>(l)].push_back(length(l, h));
  return out;
}

void KvCache::truncate_from_position(int32_t pos) {
  for (auto& r : runs_) r.len = std::lower_bound(r.pos.begin(), r.pos.begin() + r.len, pos) - r.pos.begin();
}

void KvCache::clear() {
  for (auto& r : runs_) r.len = 0;
}

size_t KvCache::bytes_held() const {
  size_t total = 0;
  for (const auto& r : runs_) total += r.k.capacity() + r.v.capacity() + r.pos.capacity() * sizeof(int32_t);
  return total;
}

size_t KvCache::bytes_used() const {
  size_t total = 0;
  for (const auto& r : runs_) total += static_cast<size_t>(r.len) * (k_row_bytes() + v_row_bytes() + sizeof(int32_t));
  return total;
}

}  // namespace kvsqueeze
