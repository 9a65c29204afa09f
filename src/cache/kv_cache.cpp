// The KV cache's rules: sliding-window trimming and rollback protection, capacity growth, and
// the checks on what callers ask for. The runs' memory is the KvStorage's (one per device).
#include "kvsqueeze/kv_cache.h"

#include <algorithm>
#include <limits>

#include "backend/kv_storage.h"
#include "kvsqueeze/error.h"

namespace kvsqueeze {

const char* kv_type_name(KvType type) {
  switch (type) {
    case KvType::F32: return "f32";
    case KvType::F16: return "f16";
    case KvType::BF16: return "bf16";
    case KvType::Q8_0: return "q8_0";
    case KvType::Q4_0: return "q4_0";
    case KvType::KIVI2: return "kivi2";
  }
  return "?";
}

std::string kv_types_label(KvType k_type, KvType v_type) {
  return k_type == v_type ? kv_type_name(k_type) : std::string(kv_type_name(k_type)) + "/" + kv_type_name(v_type);
}

KvTransform parse_kv_transform(const std::string& name, const std::string& parameter) {
  for (KvTransform t : {KvTransform::Auto, KvTransform::On, KvTransform::Off})
    if (name == kv_transform_name(t)) return t;
  throw ParameterError(parameter, "`" + parameter + "` must be auto, on or off, got '" + name + "'");
}

const char* kv_transform_name(KvTransform transform) {
  return transform == KvTransform::On ? "on" : transform == KvTransform::Off ? "off" : "auto";
}

bool kv_keys_centered(KvTransform centering, KvType k_type) {
  return centering == KvTransform::On || (centering == KvTransform::Auto && kv_type_quantized(k_type));
}

bool kv_rows_rotated(KvTransform rotation, KvType type) {
  return rotation == KvTransform::On || (rotation == KvTransform::Auto && kv_type_quantized(type));
}

bool kv_keys_rotated(KvTransform rotation, KvType k_type) {
  return k_type == KvType::KIVI2 && rotation == KvTransform::Auto ? false : kv_rows_rotated(rotation, k_type);
}

KvType parse_kv_type(const std::string& name, const std::string& what) {
  for (KvType t : {KvType::F32, KvType::F16, KvType::BF16, KvType::Q8_0, KvType::Q4_0, KvType::KIVI2})
    if (name == kv_type_name(t)) return t;
  throw ParameterError(what, "`" + what + "` must be one of f16, bf16, f32, q8_0, q4_0, kivi2, got '" + name + "'");
}

namespace {
std::string where(int64_t layer, int64_t head) { return "layer " + std::to_string(layer) + " head " + std::to_string(head); }

// A key-channel list: strictly ascending within [0, d), not empty, and within `current` (the
// run's channels so far; empty: all).
void check_channels(std::span<const int32_t> channels, int64_t d, std::span<const int32_t> current, int64_t layer, int64_t head) {
  if (channels.empty()) throw Error("internal: empty key-channel list for " + where(layer, head));
  int32_t previous = -1;
  for (int32_t c : channels) {
    if (c <= previous || c >= d)
      throw Error("internal: key channels of " + where(layer, head) + " are not strictly ascending within [0, " + std::to_string(d) + ")");
    if (!current.empty() && !std::binary_search(current.begin(), current.end(), c))
      throw Error("internal: key channel " + std::to_string(c) + " of " + where(layer, head) + " was already pruned");
    previous = c;
  }
}

// Fills in the windows and checks that each row holds whole blocks of its type.
KvCacheShape checked_shape(KvCacheShape shape) {
  if (shape.layer_window.empty()) shape.layer_window.assign(static_cast<size_t>(shape.n_layer), 0);
  const auto check = [](KvType type, int64_t d, const char* parameter, const char* what) {
    if (d % kv_block_elems(type) != 0)
      throw ParameterError(parameter, std::string("`") + parameter + "` " + kv_type_name(type) + " stores blocks of " +
                                          std::to_string(kv_block_elems(type)) + " elements, but this model's " + what +
                                          " have " + std::to_string(d) + " (use f16, bf16 or f32)");
  };
  check(shape.k_type, shape.head_dim_k, "kv_type_k", "key heads");
  check(shape.v_type, shape.head_dim_v, "kv_type_v", "value heads");
  return shape;
}

// Extra slots a sliding-window run may hold beyond its window before old ones are dropped, so
// that dropping (a memmove of the run) happens once per this many decode steps.
constexpr int64_t kSlidingSlack = 64;

// Capacity for `need` slots of a run holding `cap`: x1.5 (amortised O(1) appends), never above
// `most` unless `need` is.
int64_t grown_capacity(int64_t cap, int64_t need, int64_t most = std::numeric_limits<int64_t>::max()) {
  return std::max(need, std::min(cap + cap / 2, most));
}
}  // namespace

KvCache::KvCache(const KvCacheShape& shape, int64_t initial_capacity)
    : KvCache(backend::make_kv_storage(Device::Cpu, checked_shape(shape))) {
  const int64_t cap = std::max<int64_t>(initial_capacity, 0);
  if (cap > 0)
    for (int64_t l = 0; l < shape_.n_layer; ++l)
      for (int64_t h = 0; h < shape_.n_head_kv; ++h) storage_->set_capacity(l, h, cap);
}

KvCache::KvCache(std::unique_ptr<backend::KvStorage> storage) : shape_(checked_shape(storage->shape())), storage_(std::move(storage)) {
  trimmed_below_.assign(static_cast<size_t>(shape_.n_layer), 0);
}

KvCache::~KvCache() = default;
KvCache::KvCache(KvCache&&) noexcept = default;
KvCache& KvCache::operator=(KvCache&&) noexcept = default;

int64_t KvCache::window(int64_t layer) const { return shape_.layer_window[static_cast<size_t>(layer)]; }
size_t KvCache::k_row_bytes() const { return kv_key_row_bytes(shape_.k_type, shape_.head_dim_k); }
size_t KvCache::k_row_bytes(int64_t layer, int64_t head) const { return storage_->k_row_bytes(layer, head); }
size_t KvCache::v_row_bytes() const { return kv_row_bytes(shape_.v_type, shape_.head_dim_v); }

void KvCache::ensure_capacity(int64_t layer, int64_t head, int64_t needed) {
  const int64_t cap = capacity(layer, head);
  if (needed > cap) storage_->set_capacity(layer, head, grown_capacity(cap, needed));
}

void KvCache::reserve(int64_t n_more) {
  for (int64_t l = 0; l < shape_.n_layer; ++l) {
    if (window(l) > 0) continue;
    for (int64_t h = 0; h < shape_.n_head_kv; ++h)
      if (length(l, h) + n_more > capacity(l, h)) storage_->set_capacity(l, h, length(l, h) + n_more);
  }
}

void KvCache::prepare_append(int32_t next_pos, int64_t n) {
  for (int64_t l = 0; l < shape_.n_layer; ++l) {
    const int64_t w = window(l);
    const int64_t most = w - 1 + std::max(n, kSlidingSlack);  // what a window run holds before dropping
    if (w > 0) {
      // The first new query sits at next_pos and sees positions > next_pos - w; a protected
      // rollback point keeps what a query there would see.
      int64_t len = 0;
      for (int64_t h = 0; h < shape_.n_head_kv; ++h) len = std::max(len, length(l, h));
      const int32_t query = std::min(next_pos, protected_query_);
      if (len + n > most) drop_before_position(l, query - static_cast<int32_t>(w) + 1);
    }
    for (int64_t h = 0; h < shape_.n_head_kv; ++h) {
      const int64_t need = length(l, h) + n, cap = capacity(l, h);
      if (need <= cap) continue;
      // A sliding-window run grows by half its capacity, up to the most it holds before dropping,
      // rather than by each step's rows: one reallocation and copy per decode step made up 14% of
      // Gemma 3's decode while its windows filled (reserve() leaves windowed layers alone).
      storage_->set_capacity(l, h, grown_capacity(cap, need, w > 0 ? most : need));
    }
  }
}

void KvCache::append(int64_t layer, int64_t n, const float* k, const float* v, const int32_t* pos) {
  for (int64_t h = 0; h < shape_.n_head_kv; ++h) {
    const auto held = positions(layer, h);
    if (!held.empty() && n > 0 && pos[0] <= held.back())
      throw Error("internal: KV append at position " + std::to_string(pos[0]) + " not after " + std::to_string(held.back()));
    ensure_capacity(layer, h, length(layer, h) + n);
  }
  storage_->append(layer, n, k, v, pos);
}

Device KvCache::device() const { return storage_->device(); }
KvRun KvCache::run(int64_t layer, int64_t head) const { return storage_->host_run(layer, head); }
LentRun KvCache::lend(int64_t layer, int64_t head) const { return storage_->lend(layer, head); }
int64_t KvCache::length(int64_t layer, int64_t head) const { return storage_->length(layer, head); }
int64_t KvCache::capacity(int64_t layer, int64_t head) const { return storage_->capacity(layer, head); }
std::span<const int32_t> KvCache::positions(int64_t layer, int64_t head) const { return storage_->positions(layer, head); }

std::vector<std::vector<int64_t>> KvCache::lengths() const {
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(shape_.n_layer));
  for (int64_t l = 0; l < shape_.n_layer; ++l)
    for (int64_t h = 0; h < shape_.n_head_kv; ++h) out[static_cast<size_t>(l)].push_back(length(l, h));
  return out;
}

void KvCache::compact(int64_t layer, int64_t head, std::span<const int32_t> keep) {
  const int64_t len = length(layer, head);
  int32_t previous = -1;
  for (int32_t slot : keep) {
    if (slot <= previous || slot >= len)
      throw Error("internal: keep-set for " + where(layer, head) + " is not strictly ascending within [0, " + std::to_string(len) + ")");
    previous = slot;
  }
  storage_->compact(layer, head, keep);
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
    const auto p = positions(layer, h);
    storage_->drop_front(layer, h, std::lower_bound(p.begin(), p.end(), pos) - p.begin());
  }
}

void KvCache::truncate_from_position(int32_t pos) {
  for (int64_t l = 0; l < shape_.n_layer; ++l)
    for (int64_t h = 0; h < shape_.n_head_kv; ++h) {
      const auto p = positions(l, h);
      storage_->truncate(l, h, std::lower_bound(p.begin(), p.end(), pos) - p.begin());
    }
}

void KvCache::release_slack(int64_t slack) {
  for (int64_t l = 0; l < shape_.n_layer; ++l) release_layer_slack(l, slack);
}

void KvCache::release_layer_slack(int64_t layer, int64_t slack) {
  for (int64_t h = 0; h < shape_.n_head_kv; ++h)
    if (capacity(layer, h) != length(layer, h) + slack) storage_->set_capacity(layer, h, length(layer, h) + slack);
}

void KvCache::clear() {
  for (int64_t l = 0; l < shape_.n_layer; ++l)
    for (int64_t h = 0; h < shape_.n_head_kv; ++h) {
      if (key_channels(l, h).empty() && key_offset(l, h).empty()) storage_->truncate(l, h, 0);
      else storage_->assign(l, h, KvRun{});  // a new sequence: full keys, a new offset
    }
  std::fill(trimmed_below_.begin(), trimmed_below_.end(), 0);
}

const uint8_t* KvCache::k_bytes(int64_t layer, int64_t head) const { return static_cast<const uint8_t*>(run(layer, head).k); }
const uint8_t* KvCache::v_bytes(int64_t layer, int64_t head) const { return static_cast<const uint8_t*>(run(layer, head).v); }

void KvCache::assign(int64_t layer, int64_t head, const KvRun& rows) {
  if (rows.k_channels) check_channels({rows.k_channels, static_cast<size_t>(rows.k_stride)}, shape_.head_dim_k, {}, layer, head);
  if (rows.k_offset && (!shape_.k_centered || rows.k_channels))
    throw Error("internal: a key offset for " + where(layer, head) + " that is not centred or has pruned channels");
  storage_->assign(layer, head, rows);
}

std::span<const float> KvCache::key_offset(int64_t layer, int64_t head) const { return storage_->key_offset(layer, head); }

void KvCache::rewrite_keys(int64_t layer, int64_t head, const float* keys, const int32_t* pos) {
  if (!key_channels(layer, head).empty())
    throw Error("cannot re-rotate keys whose channels were pruned (think): re-rotate before pruning");
  rewrite_rows(layer, head, 0, length(layer, head), keys, nullptr, pos);
}

void KvCache::rewrite_rows(int64_t layer, int64_t head, int64_t first, int64_t n, const float* keys, const float* values,
                           const int32_t* pos) {
  const int64_t len = length(layer, head);
  if (first < 0 || n < 0 || first + n > len)
    throw Error("internal: rewriting slots [" + std::to_string(first) + ", " + std::to_string(first + n) + ") of a run of " +
                std::to_string(len) + " (" + where(layer, head) + ")");
  if (pos && n > 0) {  // the run's positions stay strictly ascending, across the span's edges too
    const auto held = positions(layer, head);
    bool ascending = (first == 0 || pos[0] > held[static_cast<size_t>(first - 1)]) &&
                     (first + n == len || pos[n - 1] < held[static_cast<size_t>(first + n)]);
    for (int64_t j = 1; j < n; ++j) ascending = ascending && pos[j] > pos[j - 1];
    if (!ascending) throw Error("internal: rewritten positions of " + where(layer, head) + " are not strictly ascending");
  }
  storage_->rewrite_rows(layer, head, first, n, keys, values, pos);
}

size_t KvCache::bytes_held() const { return storage_->bytes_held(); }
size_t KvCache::bytes_used() const { return storage_->bytes_used(); }

void KvCache::keep_key_channels(int64_t layer, int64_t head, std::span<const int32_t> channels) {
  check_channels(channels, shape_.head_dim_k, key_channels(layer, head), layer, head);
  const auto current = key_channels(layer, head);
  if (channels.size() == (current.empty() ? static_cast<size_t>(shape_.head_dim_k) : current.size())) return;  // keeps them all
  const int64_t block = kv_block_elems(shape_.k_type);
  if (static_cast<int64_t>(channels.size()) % block != 0)
    throw ParameterError("kv_type_k", "key-channel pruning keeps " + std::to_string(channels.size()) + " channels of " +
                                          where(layer, head) + ", but a " + kv_type_name(shape_.k_type) +
                                          " key cache stores blocks of " + std::to_string(block) +
                                          " channels: keep a multiple of " + std::to_string(block) +
                                          " or use an f16, bf16 or f32 key cache");
  storage_->keep_key_channels(layer, head, channels);
}

std::span<const int32_t> KvCache::key_channels(int64_t layer, int64_t head) const { return storage_->key_channels(layer, head); }

KvCache clone_cache(const KvCache& cache) { return KvCache(cache.storage().clone()); }

KvCache copy_cache(const KvCache& cache, std::unique_ptr<backend::KvStorage> storage) {
  KvCache copy(std::move(storage));
  for (int64_t l = 0; l < cache.shape().n_layer; ++l)
    for (int64_t h = 0; h < cache.shape().n_head_kv; ++h) copy.assign(l, h, cache.run(l, h));
  return copy;
}

}  // namespace kvsqueeze
