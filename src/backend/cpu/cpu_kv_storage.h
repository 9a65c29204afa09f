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
  void truncate(int64_t layer, int64_t head, int64_t len) override { at(layer, head).len = len; }
  void rewrite_rows(int64_t layer, int64_t head, int64_t first, int64_t n, const float* keys, const float* values,
                    const int32_t* pos) override;
  void keep_key_channels(int64_t layer, int64_t head, std::span<const int32_t> channels) override;
  void assign(int64_t layer, int64_t head, int64_t len, const uint8_t* k, const uint8_t* v, const int32_t* pos,
              std::span<const int32_t> k_channels, std::span<const float> k_offset) override;

  KvRun host_run(int64_t layer, int64_t head) const override;
  size_t bytes_held() const override;

 private:
  struct Run {
    SlotBuffer k, v, pos;
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
  bool rotated(const Run& r) const { return shape().k_rotated && r.k_channels.empty(); }
  void store_key(const Run& r, const float* src, uint8_t* dst) const;
  void take_offset(Run& r, const float* k, int64_t n, int64_t stride) const;
  void store_value(const float* src, uint8_t* dst) const;
  void resize(Run& r, int64_t cap) const;

  std::vector<Run> runs_;
};

}  // namespace kvsqueeze::backend
