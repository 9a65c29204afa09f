#pragma once
// The memory of the KV cache's runs, on one device: per (layer, KV head) a run of rows (post-RoPE
// key, value, position) with its own length and capacity, in the cache's element type. KvCache
// keeps the rules (windows, trimming, growth, rollback, argument checks) and calls this for the
// memory, so a storage trusts its arguments. A backend creates the storage of its device
// (Backend::kv_storage); only src/backend/<device>/ knows where the rows are.
// Positions and key-channel lists stay readable on the host (the rules search them); rows do
// not: host readers (LayerView, cache files, tests) go through host_run.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "kvsqueeze/device.h"
#include "kvsqueeze/kv_cache.h"
#include "kvsqueeze/kv_run.h"

namespace kvsqueeze::backend {

class KvStorage {
 public:
  explicit KvStorage(const KvCacheShape& shape) : shape_(shape) {}
  virtual ~KvStorage() = default;
  KvStorage(const KvStorage&) = delete;
  KvStorage& operator=(const KvStorage&) = delete;

  const KvCacheShape& shape() const { return shape_; }
  virtual Device device() const = 0;
  // A deep copy on the same device, each run's capacity its length (no slack).
  virtual std::unique_ptr<KvStorage> clone() const = 0;
  // The same device and shape, every run empty with no capacity.
  virtual std::unique_ptr<KvStorage> empty_like() const = 0;

  virtual int64_t length(int64_t layer, int64_t head) const = 0;
  virtual int64_t capacity(int64_t layer, int64_t head) const = 0;
  virtual std::span<const int32_t> positions(int64_t layer, int64_t head) const = 0;  // host, length entries
  // The key channels a run stores (ascending); empty: all head_dim_k of them.
  virtual std::span<const int32_t> key_channels(int64_t layer, int64_t head) const = 0;
  // A centred run's per-channel key offset (head_dim_k floats, host); empty: none.
  virtual std::span<const float> key_offset(int64_t layer, int64_t head) const = 0;

  // Reallocates a run to exactly `cap` slots, keeping its first min(length, cap) rows; the
  // memory beyond is returned at once.
  virtual void set_capacity(int64_t layer, int64_t head, int64_t cap) = 0;
  // Appends n tokens to every run of `layer` (each has room): k is n host rows of
  // n_head_kv x head_dim_k floats, v likewise, pos their positions.
  virtual void append(int64_t layer, int64_t n, const float* k, const float* v, const int32_t* pos) = 0;
  // Keeps the listed slots (strictly ascending, within the length), in place.
  virtual void compact(int64_t layer, int64_t head, std::span<const int32_t> keep) = 0;
  // Drops the first n slots, moving the rest to the front (sliding-window trimming).
  virtual void drop_front(int64_t layer, int64_t head, int64_t n) = 0;
  // Forgets the slots from `len` on (len <= length); the capacity stays.
  virtual void truncate(int64_t layer, int64_t head, int64_t len) = 0;
  // Overwrites slots [first, first+n): keys (n x head_dim_k host floats, only the run's channels
  // stored), values (n x head_dim_v), positions; each left as it is when null.
  virtual void rewrite_rows(int64_t layer, int64_t head, int64_t first, int64_t n, const float* keys, const float* values,
                            const int32_t* pos) = 0;
  // Keeps only `channels` (a subset of the run's) of every key row; K shrinks to the narrower rows.
  virtual void keep_key_channels(int64_t layer, int64_t head, std::span<const int32_t> channels) = 0;
  // Replaces a run's content with a copy of `rows`: host memory laid out as host_run lends a
  // run of this shape (rows in its types and transforms, KIVI2 groups and recent window
  // included; k_channels: k_stride of them or null for all; k_offset: head_dim_k floats or
  // null). Grows the capacity to rows.len if short.
  virtual void assign(int64_t layer, int64_t head, const KvRun& rows) = 0;

  // A host view of a run's rows, valid until the run changes: host memory lends itself, a device
  // storage stages a host copy.
  virtual KvRun host_run(int64_t layer, int64_t head) const = 0;
  // host_run's rows with an owner keeping them alive and unchanged (copy on write, kv_run.h);
  // storages that cannot lend their memory return host_run with a null owner.
  virtual LentRun lend(int64_t layer, int64_t head) const { return {host_run(layer, head), nullptr}; }
  // Bytes allocated: sum over runs of capacity x (K row + V row + position), plus for KIVI2
  // caches the key groups' parameters and the recent window.
  virtual size_t bytes_held() const = 0;

  size_t k_row_bytes(int64_t layer, int64_t head) const;  // a key row of this run (its channels only)
  size_t v_row_bytes() const;
  size_t bytes_used() const;  // bytes_held's sum with lengths instead of capacities
  size_t kivi_extra_bytes(int64_t slots, int64_t k_stride) const;

 private:
  KvCacheShape shape_;
};

// The storage of `device`'s backend without a loaded model (caches built on the host: files,
// tests); throws kvsqueeze::Error for a device this build lacks.
std::unique_ptr<KvStorage> make_kv_storage(Device device, const KvCacheShape& shape);

}  // namespace kvsqueeze::backend
