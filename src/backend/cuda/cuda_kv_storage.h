#pragma once
// The CUDA backend's KV storage: per (layer, KV head) a run of key rows, value rows and positions
// in device memory with its own capacity (AdaKV's flattened variable-length cache, without its
// copy-everything update): appends write only the new rows, compaction gathers the kept rows on
// the device, and bytes_held counts the device bytes the runs hold. Positions, key channels and
// offsets are mirrored on the host (the cache's rules read them). Float types only (f32, f16,
// bf16), stored as the CPU storage stores them, so that host_run and cache files are the same.
#include <memory>
#include <vector>

#include "backend/cuda/device_memory.h"
#include "backend/kv_storage.h"
#include "kernels/cuda/ragged_runs.h"

namespace kvsqueeze::backend::cuda::inline KVSQ_CUDA_FLAVOR {

class CudaKvStorage final : public KvStorage {
 public:
  // Throws kvsqueeze::Error for a shape the device storage cannot hold (quantized or rotated rows).
  explicit CudaKvStorage(const KvCacheShape& shape);

  Device device() const override { return Device::Cuda; }
  std::unique_ptr<KvStorage> clone() const override;
  std::unique_ptr<KvStorage> empty_like() const override;

  int64_t length(int64_t layer, int64_t head) const override { return at(layer, head).len; }
  int64_t capacity(int64_t layer, int64_t head) const override { return at(layer, head).cap; }
  std::span<const int32_t> positions(int64_t layer, int64_t head) const override;
  std::span<const int32_t> key_channels(int64_t layer, int64_t head) const override;
  std::span<const float> key_offset(int64_t layer, int64_t head) const override;

  void set_capacity(int64_t layer, int64_t head, int64_t cap) override;
  // k and v are device memory here (the CUDA backend's activations); pos is host memory.
  void append(int64_t layer, int64_t n, const float* k, const float* v, const int32_t* pos) override;
  void compact(int64_t layer, int64_t head, std::span<const int32_t> keep) override;
  void drop_front(int64_t layer, int64_t head, int64_t n) override;
  void truncate(int64_t layer, int64_t head, int64_t len) override;
  void rewrite_rows(int64_t layer, int64_t head, int64_t first, int64_t n, const float* keys, const float* values,
                    const int32_t* pos) override;
  void keep_key_channels(int64_t layer, int64_t head, std::span<const int32_t> channels) override;
  void assign(int64_t layer, int64_t head, const KvRun& rows) override;

  KvRun host_run(int64_t layer, int64_t head) const override;
  size_t bytes_held() const override;

  // The runs of `layer` as the CUDA kernels take them, and the longest.
  kernels::cuda::RunTable table(int64_t layer) const;
  int64_t max_length(int64_t layer) const;

 private:
  struct Run {
    DeviceBytes k, v, pos;
    std::vector<int32_t> host_pos;    // positions, length entries
    std::vector<int32_t> k_channels;  // stored key channels (ascending); empty: all of them
    DeviceBytes k_channels_dev;
    std::vector<float> k_offset;  // centred keys: the per-channel offset taken off; empty: none
    DeviceBytes k_offset_dev;
    int64_t len = 0, cap = 0;
    mutable std::vector<uint8_t> staged_k, staged_v;  // host_run's copy
  };
  Run& at(int64_t layer, int64_t head) { return runs_[static_cast<size_t>(layer * shape().n_head_kv + head)]; }
  const Run& at(int64_t layer, int64_t head) const { return runs_[static_cast<size_t>(layer * shape().n_head_kv + head)]; }
  int64_t k_stride(const Run& r) const;
  size_t k_bytes(const Run& r) const;  // one stored key row
  size_t v_bytes() const;
  void resize(Run& r, int64_t cap) const;
  void set_channels(Run& r, std::vector<int32_t> channels) const;
  void set_offset(Run& r, std::vector<float> offset) const;
  // Host rows of floats (stored channels, offset taken off) written as rows [first, first + n).
  void write_keys(Run& r, int64_t first, int64_t n, const float* stored) const;
  void write_values(Run& r, int64_t first, int64_t n, const float* values) const;
  void take_offsets(int64_t layer, int64_t n, const float* k);

  std::vector<Run> runs_;
  DeviceBytes pos_scratch_;
};

}  // namespace kvsqueeze::backend::cuda::inline KVSQ_CUDA_FLAVOR
