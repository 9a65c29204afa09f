#pragma once
// Ragged runs of cached rows on the device, as the CUDA kernels see them: per KV head a run of
// key rows, value rows and positions with its own length (the caller owns the memory and the
// capacities). A RunTable travels to the kernels by value (kernel parameters), so a layer's runs
// need no descriptor upload.
#include <cuda_runtime_api.h>

#include "kernels/cuda/launch.h"

#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define KVSQ_HOST_DEVICE __host__ __device__
#else
#define KVSQ_HOST_DEVICE
#endif

namespace kvsqueeze::kernels::cuda::inline KVSQ_CUDA_FLAVOR {

enum class RowType : int32_t { F32 = 0, F16 = 1, BF16 = 2 };

struct DeviceRun {
  void* k = nullptr;                    // key rows of k_stride elements
  void* v = nullptr;                    // value rows of head_dim_v elements
  int32_t* pos = nullptr;               // positions, ascending
  const int32_t* k_channels = nullptr;  // non-null: the head_dim_k channels a key row holds (k_stride of them)
  const float* k_offset = nullptr;      // non-null: a key is stored minus this (head_dim_k floats)
  int64_t len = 0;
  int32_t k_stride = 0;
};

// At most this many runs per table (KV heads per layer); 64 keep the table under the 4 KiB of
// kernel parameters every CUDA version accepts.
constexpr int kMaxRuns = 64;

struct RunTable {
  DeviceRun run[kMaxRuns];
  int32_t count = 0;
  RowType k_type = RowType::F16;
  RowType v_type = RowType::F16;
  int32_t head_dim_k = 0;
  int32_t head_dim_v = 0;
};

// Appends n tokens to every run of the table at its slot `len` on: k holds n rows of
// count x head_dim_k floats, v n rows of count x head_dim_v, pos n positions (device memory).
// A run keeps only its channels of each key and takes its offset off, then rounds to its type.
cudaError_t append_rows(const RunTable& runs, const float* k, const float* v, const int32_t* pos, int64_t n, cudaStream_t stream);

// dst row i = src row idx[i] for i < n, rows of row_bytes bytes (a multiple of 2); src and dst
// must not overlap.
cudaError_t gather_rows_bytes(const void* src, const int32_t* idx, int64_t n, size_t row_bytes, void* dst, cudaStream_t stream);

// Bytes of one row of d elements of `type`.
KVSQ_HOST_DEVICE constexpr size_t row_bytes(RowType type, int64_t d) { return static_cast<size_t>(d) * (type == RowType::F32 ? 4 : 2); }

}  // namespace kvsqueeze::kernels::cuda::inline KVSQ_CUDA_FLAVOR
