// The element-wise kernels (kernels/cuda/elementwise.h): one thread per element or pair, one
// block per row where a row needs a reduction.
#include <cuda_bf16.h>

#include "kernels/cuda/elementwise.h"

namespace kvsqueeze::kernels::cuda::inline KVSQ_CUDA_FLAVOR {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// Sum over the block (kThreads threads), in double as the CPU's rms_norm sums.
__device__ double block_sum(double v) {
  __shared__ double part[kThreads / 32];
  for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / 32 ? part[lane] : 0.0;
    for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
    if (lane == 0) part[0] = v;
  }
  __syncthreads();
  const double total = part[0];
  __syncthreads();  // part is reused by the next call
  return total;
}

__global__ void rms_norm_kernel(const float* x, const float* w, float* out, int64_t n, float eps) {
  const float* row = x + blockIdx.x * n;
  float* dst = out + blockIdx.x * n;
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) sum += static_cast<double>(row[i]) * row[i];
  const double total = block_sum(sum);
  const float scale = static_cast<float>(1.0 / sqrt(total / static_cast<double>(n) + eps));
  for (int64_t i = threadIdx.x; i < n; i += kThreads) dst[i] = w ? row[i] * scale * w[i] : row[i] * scale;
}

__global__ void rope_tables_kernel(const int32_t* pos, int64_t count, int64_t half, const float* inv_freq, float* cos_out,
                                   float* sin_out) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (e >= count) return;
  const float theta = static_cast<float>(pos[e / half]) * inv_freq[e % half];
  cos_out[e] = cosf(theta);  // full-range cosf/sinf (not the fast intrinsics): positions reach 10^5
  sin_out[e] = sinf(theta);
}

__global__ void rope_apply_kernel(float* x, int64_t count, int64_t heads, int64_t d, const float* cos, const float* sin,
                                  bool neox) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;  // one rotated pair
  if (e >= count) return;
  const int64_t half = d / 2, i = e % half, head_row = e / half, t = head_row / heads;
  float* v = x + head_row * d;
  const float c = cos[t * half + i], s = sin[t * half + i];
  const int64_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
  const float x0 = v[a], x1 = v[b];
  v[a] = x0 * c - x1 * s;
  v[b] = x0 * s + x1 * c;
}

__global__ void gated_kernel(float* gate, const float* up, int64_t n, bool gelu_tanh) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  float act;
  if (gelu_tanh) {
    const float inner = 0.7978845608028654f * (g + 0.044715f * g * g * g);
    act = 0.5f * g * (1.0f + tanhf(inner));
  } else {
    act = g / (1.0f + expf(-g));
  }
  gate[i] = act * up[i];
}

__global__ void add_kernel(float* x, const float* y, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (i < n) x[i] += y[i];
}

__global__ void add_rows_kernel(float* x, const float* bias, int64_t count, int64_t width) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (i < count) x[i] += bias[i % width];
}

__global__ void gather_kernel(const float* x, const int64_t* rows, int64_t count, int64_t width, float* out) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (e >= count) return;
  out[e] = x[rows[e / width] * width + e % width];
}

__global__ void to_bf16_kernel(const float* x, int64_t n, __nv_bfloat16* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(x[i]);
}

}  // namespace

cudaError_t rms_norm_rows(const float* x, const float* w, float* out, int64_t rows, int64_t n, float eps, cudaStream_t stream) {
  if (rows > 0) KVSQ_LAUNCH(rms_norm_kernel, static_cast<unsigned>(rows), kThreads, 0, stream, x, w, out, n, eps);
  return KVSQ_LAUNCH_ERROR();
}

cudaError_t rope_tables(const int32_t* pos, int64_t n, const float* inv_freq, int64_t d, float* cos, float* sin, cudaStream_t stream) {
  const int64_t count = n * (d / 2);
  if (count > 0) KVSQ_LAUNCH(rope_tables_kernel, blocks_for(count), kThreads, 0, stream, pos, count, d / 2, inv_freq, cos, sin);
  return KVSQ_LAUNCH_ERROR();
}

cudaError_t rope_apply(float* x, int64_t n, int64_t heads, int64_t d, const float* cos, const float* sin, bool neox, cudaStream_t stream) {
  const int64_t count = n * heads * (d / 2);
  if (count > 0) KVSQ_LAUNCH(rope_apply_kernel, blocks_for(count), kThreads, 0, stream, x, count, heads, d, cos, sin, neox);
  return KVSQ_LAUNCH_ERROR();
}

cudaError_t gated_activation(float* gate, const float* up, int64_t n, bool gelu_tanh, cudaStream_t stream) {
  if (n > 0) KVSQ_LAUNCH(gated_kernel, blocks_for(n), kThreads, 0, stream, gate, up, n, gelu_tanh);
  return KVSQ_LAUNCH_ERROR();
}

cudaError_t add(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n > 0) KVSQ_LAUNCH(add_kernel, blocks_for(n), kThreads, 0, stream, x, y, n);
  return KVSQ_LAUNCH_ERROR();
}

cudaError_t add_rows(float* x, const float* bias, int64_t n, int64_t width, cudaStream_t stream) {
  if (n * width > 0) KVSQ_LAUNCH(add_rows_kernel, blocks_for(n * width), kThreads, 0, stream, x, bias, n * width, width);
  return KVSQ_LAUNCH_ERROR();
}

cudaError_t gather_rows(const float* x, const int64_t* rows, int64_t count, int64_t width, float* out, cudaStream_t stream) {
  if (count * width > 0) KVSQ_LAUNCH(gather_kernel, blocks_for(count * width), kThreads, 0, stream, x, rows, count * width, width, out);
  return KVSQ_LAUNCH_ERROR();
}

cudaError_t f32_to_bf16(const float* x, int64_t n, uint16_t* out, cudaStream_t stream) {
  if (n > 0) KVSQ_LAUNCH(to_bf16_kernel, blocks_for(n), kThreads, 0, stream, x, n, reinterpret_cast<__nv_bfloat16*>(out));
  return KVSQ_LAUNCH_ERROR();
}

}  // namespace kvsqueeze::kernels::cuda::inline KVSQ_CUDA_FLAVOR
