#pragma once
// Reading and writing one element of a cached row of RowType (device code, shared by the
// ragged-run kernels).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/ragged_runs.h"

namespace kvsqueeze::kernels::cuda {

__device__ inline float load_element(const void* row, RowType type, int64_t i) {
  switch (type) {
    case RowType::F32: return static_cast<const float*>(row)[i];
    case RowType::F16: return __half2float(static_cast<const __half*>(row)[i]);
    case RowType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(row)[i]);
  }
  return 0.0f;
}

// Rounds to nearest even, as the CPU's encoders do.
__device__ inline void store_element(void* row, RowType type, int64_t i, float x) {
  switch (type) {
    case RowType::F32: static_cast<float*>(row)[i] = x; return;
    case RowType::F16: static_cast<__half*>(row)[i] = __float2half_rn(x); return;
    case RowType::BF16: static_cast<__nv_bfloat16*>(row)[i] = __float2bfloat16_rn(x); return;
  }
}

}  // namespace kvsqueeze::kernels::cuda
