#pragma once
// The CPU backend's KV storage: per run, SlotBuffers of rows in the cache's element type, which
// the attention kernels and host readers use in place (host_run lends them).
#include <memory>
#include <vector>

#include "backend/cpu/slot_buffer.h"
#include "backend/kv_storage.h"

namespace kvsqueeze::backend {

class CpuKvStorage final : public KvStorage {
 public:
  explicit CpuKvStorage(const KvCacheShape& shape);

  Device device() const override { return Device::Cpu; }
  std::unique_ptr<KvStorage> clone() const override;
  std::unique_ptr<KvStorage> empty_like() const override;

  int64_t length(int64_t layer, int64_t head) const override { return at(layer, head).len; }
  int64_t capacity(int64_t layer, int64_t head) const override { return at(layer, head).cap; }
  std::span<const int32_t> positions(int64_t layer, int64_t head) const override;
  std::span<const int32_t> key_channels(int64_t layer, int64_t head) const override;
  std::span<const float> key_offset(int64_t layer, int64_t head) const override;

  void set_capacity(int64_t layer, int64_t head, int64_t cap) override;
  void append(int64_t layer, int64_t n, const float* k, const float* v, const int32_t* pos) override;
  void compact(int64_t layer, int64_t head, std::span<const int32_t> keep) override;
  void drop_front(int64_t layer, int64_t head, int64_t n) override;
  void truncate(int64_t layer, int64_t head, int64_t len) override;
  void rewrite_rows(int64_t layer, int64_t head, int64_t first, int64_t n, const float* keys, const float* values,
                    const int32_t* pos) override;
  void keep_key_channels(int64_t layer, int64_t head, std::span<const int32_t> channels) override;
  void assign(int64_t layer, int64_t head, const KvRun& rows) override;

  KvRun host_run(int64_t layer, int64_t head) const override;
  LentRun lend(int64_t layer, int64_t head) const override;
  size_t bytes_held() const override;

 private:
  struct Run {
    SlotBuffer k, v, pos;
    // Caches holding a KIVI2 type: the per-channel parameters of each full group of KIVI2 keys,
    // and the recent window (f16 key and value rows of the slots from recent_first on, fewer
    // than kKiviGroup; quantized together when the window fills).
    SlotBuffer k_groups, k_recent, v_recent;
    int64_t recent_first = 0;
    int64_t len = 0;
    int64_t cap = 0;
    std::vector<int32_t> k_channels;  // stored key channels (ascending); empty: all of them
    std::vector<float> k_offset;      // centred keys: the per-channel offset taken off; empty: none
    int32_t* positions() { return reinterpret_cast<int32_t*>(pos.data()); }
    const int32_t* positions() const { return reinterpret_cast<const int32_t*>(pos.data()); }
  };
  Run& at(int64_t layer, int64_t head) { return runs_[static_cast<size_t>(layer * shape().n_head_kv + head)]; }
  const Run& at(int64_t layer, int64_t head) const { return runs_[static_cast<size_t>(layer * shape().n_head_kv + head)]; }
  size_t k_row_bytes(const Run& r) const;
  int64_t k_stride(const Run& r) const;
  bool rotated(const Run& r) const { return shape().k_rotated && r.k_channels.empty(); }
  // Whether runs keep a recent window (a KIVI2 type for keys or values).
  bool windowed() const { return shape().k_type == KvType::KIVI2 || shape().v_type == KvType::KIVI2; }
  // A key of head_dim_k floats as the run stores it (its channels; centred; rotated): k_stride floats.
  const float* stored_key(const Run& r, const float* src, std::vector<float>& scratch) const;
  const float* stored_value(const float* src, std::vector<float>& scratch) const;
  void take_offset(Run& r, const float* k, int64_t n, int64_t stride) const;
  void resize(Run& r, int64_t cap) const;
  // Before a run's rows are written in place: rows lent to a reader (lend) are copied first.
  Run& writable(int64_t layer, int64_t head);
  // Windowed runs: append one slot given as stored (k_stride and head_dim_v floats), quantizing
  // the window when it fills; and rebuild a run from stored rows (groups formed anew).
  void push_stored(Run& r, const float* k, const float* v, int32_t pos) const;
  int64_t window_rows(const Run& r) const;
  void grow_window(Run& r, int64_t keep) const;
  void flush_window(Run& r) const;
  struct StoredRows {
    std::vector<float> k, v;
    std::vector<int32_t> pos;
  };
  StoredRows read_stored(const Run& r) const;
  KvRun view(const Run& r) const;
  void rebuild(Run& r, const StoredRows& rows, std::span<const int32_t> slots) const;

  std::vector<Run> runs_;
};

}  // namespace kvsqueeze::backend
