#pragma once
// Reading and writing one element of a cached row of RowType (device code, shared by the
// ragged-run kernels).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/ragged_runs.h"

namespace kvsqueeze::kernels::cuda::inline KVSQ_CUDA_FLAVOR {

// A 16-bit element's bits as a float (through the raw structs: no type punning, which host
// compilers, and so the emulation, would be free to break).
__device__ inline float bits_to_float(uint16_t bits, RowType type) {
  if (type == RowType::F16) {
    __half_raw raw;
    raw.x = bits;
    return __half2float(__half(raw));
  }
  __nv_bfloat16_raw raw;
  raw.x = bits;
  return __bfloat162float(__nv_bfloat16(raw));
}

__device__ inline float load_element(const void* row, RowType type, int64_t i) {
  if (type == RowType::F32) return static_cast<const float*>(row)[i];
  return bits_to_float(static_cast<const uint16_t*>(row)[i], type);
}

// Rounds to nearest even, as the CPU's encoders do.
__device__ inline void store_element(void* row, RowType type, int64_t i, float x) {
  switch (type) {
    case RowType::F32: static_cast<float*>(row)[i] = x; return;
    case RowType::F16: static_cast<uint16_t*>(row)[i] = static_cast<__half_raw>(__float2half_rn(x)).x; return;
    case RowType::BF16: static_cast<uint16_t*>(row)[i] = static_cast<__nv_bfloat16_raw>(__float2bfloat16_rn(x)).x; return;
  }
}

}  // namespace kvsqueeze::kernels::cuda::inline KVSQ_CUDA_FLAVOR
