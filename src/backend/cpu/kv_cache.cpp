// The KV cache on host memory, as the CPU backend stores it: per run, SlotBuffers of rows in
// the cache's element type (the kernels read them in place through KvRun). A device backend
// keeps the same KvCache interface over its own storage.
#include "kvsqueeze/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "backend/cpu/slot_buffer.h"
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

namespace {
// A key-channel list: strictly ascending within [0, d), not empty, and within `current` (the
// run's channels so far; empty: all).
void check_channels(std::span<const int32_t> channels, int64_t d, const std::vector<int32_t>& current, int64_t layer, int64_t head) {
  const std::string where = "layer " + std::to_string(layer) + " head " + std::to_string(head);
  if (channels.empty()) throw Error("internal: empty key-channel list for " + where);
  int32_t previous = -1;
  for (int32_t c : channels) {
    if (c <= previous || c >= d)
      throw Error("internal: key channels of " + where + " are not strictly ascending within [0, " + std::to_string(d) + ")");
    if (!current.empty() && !std::binary_search(current.begin(), current.end(), c))
      throw Error("internal: key channel " + std::to_string(c) + " of " + where + " was already pruned");
    previous = c;
  }
}
}  // namespace

struct KvCache::Run {
  SlotBuffer k, v, pos;
  int64_t len = 0;
  int64_t cap = 0;
  std::vector<int32_t> k_channels;  // stored key channels (ascending); empty: all of them
  int32_t* positions() { return reinterpret_cast<int32_t*>(pos.data()); }
  const int32_t* positions() const { return reinterpret_cast<const int32_t*>(pos.data()); }
};

namespace {
// Extra slots a sliding-window run may hold beyond its window before old ones are dropped, so
// that dropping (a memmove of the run) happens once per this many decode steps.
constexpr int64_t kSlidingSlack = 64;
}  // namespace

KvCache::KvCache(const KvCacheShape& shape, int64_t initial_capacity) : shape_(shape) {
  if (shape_.layer_window.empty()) shape_.layer_window.assign(static_cast<size_t>(shape_.n_layer), 0);
  runs_.resize(static_cast<size_t>(shape.n_layer * shape.n_head_kv));
  trimmed_below_.assign(static_cast<size_t>(shape.n_layer), 0);
  for (auto& r : runs_) set_capacity(r, std::max<int64_t>(initial_capacity, 0));
}

KvCache::~KvCache() = default;
KvCache::KvCache(KvCache&&) noexcept = default;
KvCache& KvCache::operator=(KvCache&&) noexcept = default;

KvCache::Run& KvCache::at(int64_t layer, int64_t head) { return runs_[static_cast<size_t>(layer * shape_.n_head_kv + head)]; }
const KvCache::Run& KvCache::at(int64_t layer, int64_t head) const {
  return runs_[static_cast<size_t>(layer * shape_.n_head_kv + head)];
}

int64_t KvCache::window(int64_t layer) const { return shape_.layer_window[static_cast<size_t>(layer)]; }
size_t KvCache::k_row_bytes() const { return static_cast<size_t>(shape_.head_dim_k) * kv_type_bytes(shape_.type); }
size_t KvCache::k_row_bytes(const Run& r) const {
  return r.k_channels.empty() ? k_row_bytes() : r.k_channels.size() * kv_type_bytes(shape_.type);
}
size_t KvCache::k_row_bytes(int64_t layer, int64_t head) const { return k_row_bytes(at(layer, head)); }
size_t KvCache::v_row_bytes() const { return static_cast<size_t>(shape_.head_dim_v) * kv_type_bytes(shape_.type); }

void KvCache::set_capacity(Run& r, int64_t cap) {
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

void KvCache::ensure_capacity(Run& r, int64_t needed) {
  if (needed > r.cap) set_capacity(r, std::max(needed, r.cap + r.cap / 2));  // x1.5: amortised O(1) appends
}

void KvCache::reserve(int64_t n_more) {
  for (int64_t l = 0; l < shape_.n_layer; ++l) {
    if (window(l) > 0) continue;
    for (int64_t h = 0; h < shape_.n_head_kv; ++h) {
      Run& r = at(l, h);
      if (r.len + n_more > r.cap) set_capacity(r, r.len + n_more);
    }
  }
}

void KvCache::prepare_append(int32_t next_pos, int64_t n) {
  for (int64_t l = 0; l < shape_.n_layer; ++l) {
    const int64_t w = window(l);
    if (w > 0) {
      // The first new query sits at next_pos and sees positions > next_pos - w; a protected
      // rollback point keeps what a query there would see.
      int64_t len = 0;
      for (int64_t h = 0; h < shape_.n_head_kv; ++h) len = std::max(len, at(l, h).len);
      const int32_t query = std::min(next_pos, protected_query_);
      if (len + n > w - 1 + std::max(n, kSlidingSlack)) drop_before_position(l, query - static_cast<int32_t>(w) + 1);
    }
    for (int64_t h = 0; h < shape_.n_head_kv; ++h) {
      Run& r = at(l, h);
      if (r.len + n > r.cap) set_capacity(r, r.len + n);
    }
  }
}

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

void KvCache::append(int64_t layer, int64_t n, const float* k, const float* v, const int32_t* pos) {
  const int64_t dk = shape_.head_dim_k, dv = shape_.head_dim_v, hkv = shape_.n_head_kv;
  for (int64_t h = 0; h < hkv; ++h) {
    Run& r = at(layer, h);
    if (r.len > 0 && n > 0 && pos[0] <= r.positions()[r.len - 1])
      throw Error("internal: KV append at position " + std::to_string(pos[0]) + " not after " +
                  std::to_string(r.positions()[r.len - 1]));
    ensure_capacity(r, r.len + n);
    for (int64_t t = 0; t < n; ++t) {
      store_row(k + (t * hkv + h) * dk, dk, shape_.type, r.k.data() + static_cast<size_t>(r.len + t) * k_row_bytes(r), &r.k_channels);
      store_row(v + (t * hkv + h) * dv, dv, shape_.type, r.v.data() + static_cast<size_t>(r.len + t) * v_row_bytes());
      r.positions()[r.len + t] = pos[t];
    }
    r.len += n;
  }
}

KvRun KvCache::run(int64_t layer, int64_t head) const {
  const Run& r = at(layer, head);
  KvRun out;
  out.k = r.k.data();
  out.v = r.v.data();
  out.pos = r.positions();
  out.len = r.len;
  out.k_stride = r.k_channels.empty() ? shape_.head_dim_k : static_cast<int64_t>(r.k_channels.size());
  out.k_channels = r.k_channels.empty() ? nullptr : r.k_channels.data();
  out.v_stride = shape_.head_dim_v;
  out.type = shape_.type == KvType::F32 ? KvElement::F32
             : shape_.type == KvType::F16 ? KvElement::F16
                                          : KvElement::BF16;
  return out;
}

int64_t KvCache::length(int64_t layer, int64_t head) const { return at(layer, head).len; }
int64_t KvCache::capacity(int64_t layer, int64_t head) const { return at(layer, head).cap; }
std::span<const int32_t> KvCache::positions(int64_t layer, int64_t head) const {
  const Run& r = at(layer, head);
  return {r.positions(), static_cast<size_t>(r.len)};
}

std::vector<std::vector<int64_t>> KvCache::lengths() const {
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(shape_.n_layer));
  for (int64_t l = 0; l < shape_.n_layer; ++l)
    for (int64_t h = 0; h < shape_.n_head_kv; ++h) out[static_cast<size_t>(l)].push_back(length(l, h));
  return out;
}

void KvCache::compact(int64_t layer, int64_t head, std::span<const int32_t> keep) {
  Run& r = at(layer, head);
  const size_t kb = k_row_bytes(r), vb = v_row_bytes();
  int64_t out = 0;
  int32_t previous = -1;
  for (int32_t slot : keep) {
    if (slot <= previous || slot >= r.len)
      throw Error("internal: keep-set for layer " + std::to_string(layer) + " head " + std::to_string(head) +
                  " is not strictly ascending within [0, " + std::to_string(r.len) + ")");
    previous = slot;
    if (slot != out) {  // rows only move down, so copying forward in place is safe
      std::memmove(r.k.data() + static_cast<size_t>(out) * kb, r.k.data() + static_cast<size_t>(slot) * kb, kb);
      std::memmove(r.v.data() + static_cast<size_t>(out) * vb, r.v.data() + static_cast<size_t>(slot) * vb, vb);
      r.positions()[out] = r.positions()[slot];
    }
    ++out;
  }
  r.len = out;
}

void KvCache::protect_query_position(int32_t pos) { protected_query_ = pos; }

bool KvCache::can_roll_back_to(int32_t pos) const {
  for (int64_t l = 0; l < shape_.n_layer; ++l)
    if (window(l) > 0 && std::max(0, pos - static_cast<int32_t>(window(l)) + 1) < trimmed_below_[static_cast<size_t>(l)]) return false;
  return true;
}

void KvCache::drop_before_position(int64_t layer, int32_t pos) {
  trimmed_below_[static_cast<size_t>(layer)] = std::max(trimmed_below_[static_cast<size_t>(layer)], pos);
  for (int64_t h = 0; h < shape_.n_head_kv; ++h) {
    Run& r = at(layer, h);
    const int64_t first = std::lower_bound(r.positions(), r.positions() + r.len, pos) - r.positions();
    if (first == 0) continue;
    const int64_t keep = r.len - first;
    std::memmove(r.k.data(), r.k.data() + static_cast<size_t>(first) * k_row_bytes(r), static_cast<size_t>(keep) * k_row_bytes(r));
    std::memmove(r.v.data(), r.v.data() + static_cast<size_t>(first) * v_row_bytes(), static_cast<size_t>(keep) * v_row_bytes());
    std::memmove(r.positions(), r.positions() + first, static_cast<size_t>(keep) * sizeof(int32_t));
    r.len = keep;
  }
}

void KvCache::truncate_from_position(int32_t pos) {
  for (auto& r : runs_) r.len = std::lower_bound(r.positions(), r.positions() + r.len, pos) - r.positions();
}

void KvCache::release_slack(int64_t slack) {
  for (int64_t l = 0; l < shape_.n_layer; ++l) release_layer_slack(l, slack);
}

void KvCache::release_layer_slack(int64_t layer, int64_t slack) {
  for (int64_t h = 0; h < shape_.n_head_kv; ++h) {
    Run& r = at(layer, h);
    if (r.cap != r.len + slack) set_capacity(r, r.len + slack);
  }
}

void KvCache::clear() {
  for (auto& r : runs_) {
    r.len = 0;
    if (!r.k_channels.empty()) {  // a new sequence stores full keys again
      r.k_channels.clear();
      r.k = SlotBuffer(static_cast<size_t>(r.cap) * k_row_bytes());
    }
  }
  std::fill(trimmed_below_.begin(), trimmed_below_.end(), 0);
}

const uint8_t* KvCache::k_bytes(int64_t layer, int64_t head) const { return at(layer, head).k.data(); }
const uint8_t* KvCache::v_bytes(int64_t layer, int64_t head) const { return at(layer, head).v.data(); }

void KvCache::assign(int64_t layer, int64_t head, int64_t len, const uint8_t* k, const uint8_t* v, const int32_t* pos,
                     std::span<const int32_t> k_channels) {
  Run& r = at(layer, head);
  r.len = 0;
  if (!std::equal(k_channels.begin(), k_channels.end(), r.k_channels.begin(), r.k_channels.end())) {
    if (!k_channels.empty()) check_channels(k_channels, shape_.head_dim_k, {}, layer, head);
    r.k_channels.assign(k_channels.begin(), k_channels.end());
    r.k = SlotBuffer(static_cast<size_t>(r.cap) * k_row_bytes(r));
  }
  if (len > r.cap) set_capacity(r, len);
  if (len > 0) {
    std::memcpy(r.k.data(), k, static_cast<size_t>(len) * k_row_bytes(r));
    std::memcpy(r.v.data(), v, static_cast<size_t>(len) * v_row_bytes());
    std::memcpy(r.pos.data(), pos, static_cast<size_t>(len) * sizeof(int32_t));
  }
  r.len = len;
}

void KvCache::rewrite_keys(int64_t layer, int64_t head, const float* keys, const int32_t* pos) {
  if (!at(layer, head).k_channels.empty())
    throw Error("cannot re-rotate keys whose channels were pruned (think): re-rotate before pruning");
  rewrite_rows(layer, head, 0, length(layer, head), keys, nullptr, pos);
}

void KvCache::rewrite_rows(int64_t layer, int64_t head, int64_t first, int64_t n, const float* keys, const float* values,
                           const int32_t* pos) {
  Run& r = at(layer, head);
  const std::string where = "layer " + std::to_string(layer) + " head " + std::to_string(head);
  if (first < 0 || n < 0 || first + n > r.len)
    throw Error("internal: rewriting slots [" + std::to_string(first) + ", " + std::to_string(first + n) + ") of a run of " +
                std::to_string(r.len) + " (" + where + ")");
  if (pos && n > 0) {  // the run's positions stay strictly ascending, across the span's edges too
    bool ascending = (first == 0 || pos[0] > r.positions()[first - 1]) && (first + n == r.len || pos[n - 1] < r.positions()[first + n]);
    for (int64_t j = 1; j < n; ++j) ascending = ascending && pos[j] > pos[j - 1];
    if (!ascending) throw Error("internal: rewritten positions of " + where + " are not strictly ascending");
  }
  for (int64_t j = first; j < first + n; ++j) {
    if (keys) store_row(keys + (j - first) * shape_.head_dim_k, shape_.head_dim_k, shape_.type,
                        r.k.data() + static_cast<size_t>(j) * k_row_bytes(r), &r.k_channels);
    if (values) store_row(values + (j - first) * shape_.head_dim_v, shape_.head_dim_v, shape_.type,
                          r.v.data() + static_cast<size_t>(j) * v_row_bytes());
    if (pos) r.positions()[j] = pos[j - first];
  }
}

size_t KvCache::bytes_held() const {
  size_t total = 0;
  for (const auto& r : runs_) total += r.k.size() + r.v.size() + r.pos.size();
  return total;
}

size_t KvCache::bytes_used() const {
  size_t total = 0;
  for (const auto& r : runs_) total += static_cast<size_t>(r.len) * (k_row_bytes(r) + v_row_bytes() + sizeof(int32_t));
  return total;
}

void KvCache::keep_key_channels(int64_t layer, int64_t head, std::span<const int32_t> channels) {
  Run& r = at(layer, head);
  check_channels(channels, shape_.head_dim_k, r.k_channels, layer, head);
  // Where each kept channel sits in the current rows.
  std::vector<size_t> from(channels.size());
  for (size_t i = 0; i < channels.size(); ++i)
    from[i] = r.k_channels.empty() ? static_cast<size_t>(channels[i])
                                   : static_cast<size_t>(std::lower_bound(r.k_channels.begin(), r.k_channels.end(), channels[i]) -
                                                         r.k_channels.begin());
  const size_t e = kv_type_bytes(shape_.type), old_row = k_row_bytes(r), new_row = channels.size() * e;
  SlotBuffer k(static_cast<size_t>(r.cap) * new_row);
  for (int64_t j = 0; j < r.len; ++j)
    for (size_t i = 0; i < from.size(); ++i)
      std::memcpy(k.data() + static_cast<size_t>(j) * new_row + i * e, r.k.data() + static_cast<size_t>(j) * old_row + from[i] * e, e);
  r.k = std::move(k);
  r.k_channels.assign(channels.begin(), channels.end());
  if (r.k_channels.size() == static_cast<size_t>(shape_.head_dim_k)) r.k_channels.clear();  // all of them
}

std::span<const int32_t> KvCache::key_channels(int64_t layer, int64_t head) const {
  const Run& r = at(layer, head);
  return {r.k_channels.data(), r.k_channels.size()};
}

}  // namespace kvsqueeze
