// Appending to and gathering the ragged runs (kernels/cuda/ragged_runs.h).
#include "kernels/cuda/ragged_runs.h"
#include "kernels/cuda/row_elements.cuh"

namespace kvsqueeze::kernels::cuda::inline KVSQ_CUDA_FLAVOR {
namespace {

constexpr int kThreads = 128;

// One block per (token, run): the run's key channels, its value row and the position.
__global__ void append_kernel(RunTable runs, const float* k, const float* v, const int32_t* pos) {
  const int64_t t = blockIdx.x / runs.count;
  const int h = static_cast<int>(blockIdx.x % runs.count);
  const DeviceRun& r = runs.run[h];
  const int64_t slot = r.len + t;
  const float* key = k + (t * runs.count + h) * runs.head_dim_k;
  const float* value = v + (t * runs.count + h) * runs.head_dim_v;
  char* k_row = static_cast<char*>(r.k) + slot * row_bytes(runs.k_type, r.k_stride);
  char* v_row = static_cast<char*>(r.v) + slot * row_bytes(runs.v_type, runs.head_dim_v);
  for (int i = threadIdx.x; i < r.k_stride; i += kThreads) {
    const int c = r.k_channels ? r.k_channels[i] : i;
    store_element(k_row, runs.k_type, i, key[c] - (r.k_offset ? r.k_offset[c] : 0.0f));
  }
  for (int i = threadIdx.x; i < runs.head_dim_v; i += kThreads) store_element(v_row, runs.v_type, i, value[i]);
  if (threadIdx.x == 0) r.pos[slot] = pos[t];
}

__global__ void gather_kernel(const uint16_t* src, const int32_t* idx, int64_t units, int64_t row_units, uint16_t* dst) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (e >= units) return;
  const int64_t row = e / row_units, col = e % row_units;
  dst[e] = src[static_cast<int64_t>(idx[row]) * row_units + col];
}

}  // namespace

cudaError_t append_rows(const RunTable& runs, const float* k, const float* v, const int32_t* pos, int64_t n, cudaStream_t stream) {
  if (runs.count <= 0 || runs.count > kMaxRuns) return cudaErrorInvalidValue;
  if (n > 0) KVSQ_LAUNCH(append_kernel, static_cast<unsigned>(n * runs.count), kThreads, 0, stream, runs, k, v, pos);
  return KVSQ_LAUNCH_ERROR();
}

cudaError_t gather_rows_bytes(const void* src, const int32_t* idx, int64_t n, size_t row_bytes, void* dst, cudaStream_t stream) {
  if (row_bytes % 2 != 0) return cudaErrorInvalidValue;
  const int64_t row_units = static_cast<int64_t>(row_bytes / 2), units = n * row_units;
  if (units > 0)
    KVSQ_LAUNCH(gather_kernel, static_cast<unsigned>((units + kThreads - 1) / kThreads), kThreads, 0, stream, 
        static_cast<const uint16_t*>(src), idx, units, row_units, static_cast<uint16_t*>(dst));
  return KVSQ_LAUNCH_ERROR();
}

}  // namespace kvsqueeze::kernels::cuda::inline KVSQ_CUDA_FLAVOR
