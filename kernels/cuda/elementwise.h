#pragma once
// CUDA kernels of the forward pass's element-wise steps, on device memory, launched on `stream`.
// Each launcher returns the launch's error (cudaSuccess when queued). The arithmetic follows the
// CPU kernels (kernels/ops.cpp) so that both backends agree to float rounding.
#include <cuda_runtime_api.h>

#include "kernels/cuda/launch.h"

#include <cstdint>

namespace kvsqueeze::kernels::cuda::inline KVSQ_CUDA_FLAVOR {

// out row r = x row r / sqrt(mean(x row r ^ 2) + eps) * w (w may be null), rows of n floats; out may be x.
cudaError_t rms_norm_rows(const float* x, const float* w, float* out, int64_t rows, int64_t n, float eps, cudaStream_t stream);
// cos/sin (n rows of d/2) of pos[t] * inv_freq[i], the product in fp32 as the CPU computes it.
cudaError_t rope_tables(const int32_t* pos, int64_t n, const float* inv_freq, int64_t d, float* cos, float* sin, cudaStream_t stream);
// Rotates each of the n x heads head vectors (d floats) of x by its row's tables: neox pairs
// (i, i + d/2) or adjacent pairs (2i, 2i+1).
cudaError_t rope_apply(float* x, int64_t n, int64_t heads, int64_t d, const float* cos, const float* sin, bool neox, cudaStream_t stream);
// gate = act(gate) * up over n floats; act SiLU or tanh-approximated GELU.
cudaError_t gated_activation(float* gate, const float* up, int64_t n, bool gelu_tanh, cudaStream_t stream);
// x += y over n floats.
cudaError_t add(float* x, const float* y, int64_t n, cudaStream_t stream);
// Each of x's n rows of `width` floats += bias.
cudaError_t add_rows(float* x, const float* bias, int64_t n, int64_t width, cudaStream_t stream);
// out row i = x row rows[i] (device indices), rows of `width` floats.
cudaError_t gather_rows(const float* x, const int64_t* rows, int64_t count, int64_t width, float* out, cudaStream_t stream);
// bf16 (round to nearest even) of n floats.
cudaError_t f32_to_bf16(const float* x, int64_t n, uint16_t* out, cudaStream_t stream);

}  // namespace kvsqueeze::kernels::cuda::inline KVSQ_CUDA_FLAVOR
