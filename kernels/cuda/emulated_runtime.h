#pragma once
// The CUDA runtime and cuBLAS calls of src/backend/cuda/, on the CPU, for the CUDA backend
// compiled with KVSQ_CUDA_EMULATE (tests/gpu/): "device" memory is host memory, copies are
// memcpy, and cublasGemmEx is a plain column-major GEMM of bf16 operands with fp32 results, with
// cuBLAS's argument conventions (so the backend's transposes and leading dimensions are checked).
// Tests only. Included after the CUDA headers; the macros below rename the calls.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <cstring>
#include <vector>

namespace kvsqueeze::kernels::cuda::emu {

inline cudaError_t malloc_async(void** p, size_t bytes, cudaStream_t) {
  *p = bytes ? std::malloc(bytes) : nullptr;
  return bytes && !*p ? cudaErrorMemoryAllocation : cudaSuccess;
}
inline cudaError_t free_async(void* p, cudaStream_t) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t copy_async(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) { return copy(dst, src, bytes, kind); }
inline cudaError_t device_count(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t set_device(int) { return cudaSuccess; }
inline cudaError_t device_attribute(int* value, cudaDeviceAttr, int) {
  *value = 8;  // "SMs": enough for the split-K path to split
  return cudaSuccess;
}
inline cudaError_t last_error() { return cudaSuccess; }
inline const char* error_string(cudaError_t) { return "emulated CUDA error"; }

inline cublasStatus_t blas_create(cublasHandle_t* h) {
  *h = nullptr;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t blas_destroy(cublasHandle_t) { return CUBLAS_STATUS_SUCCESS; }

// C (m x n, column-major, ldc) = alpha op(A) op(B) + beta C for bf16 A, B and fp32 C only.
inline cublasStatus_t gemm_ex(cublasHandle_t, cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k, const void* alpha,
                              const void* a, cudaDataType a_type, int lda, const void* b, cudaDataType b_type, int ldb, const void* beta,
                              void* c, cudaDataType c_type, int ldc, cublasComputeType_t, cublasGemmAlgo_t) {
  if (a_type != CUDA_R_16BF || b_type != CUDA_R_16BF || c_type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  auto bf = [](const void* base, int64_t i) {  // bf16 is the top half of an f32
    const uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(base)[i]) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  };
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  // op(A) rows and op(B) columns as contiguous floats, then fp32 dot products (cuBLAS's
  // accumulation type).
  std::vector<float> ra(static_cast<size_t>(m) * k), cb(static_cast<size_t>(n) * k);
  for (int i = 0; i < m; ++i)
    for (int p = 0; p < k; ++p)
      ra[static_cast<size_t>(i) * k + p] = bf(a, op_a == CUBLAS_OP_N ? static_cast<int64_t>(p) * lda + i : static_cast<int64_t>(i) * lda + p);
  for (int j = 0; j < n; ++j)
    for (int p = 0; p < k; ++p)
      cb[static_cast<size_t>(j) * k + p] = bf(b, op_b == CUBLAS_OP_N ? static_cast<int64_t>(j) * ldb + p : static_cast<int64_t>(p) * ldb + j);
  float* out = static_cast<float*>(c);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      const float* x = ra.data() + static_cast<size_t>(i) * k;
      const float* y = cb.data() + static_cast<size_t>(j) * k;
      float sum = 0.0f;
      for (int p = 0; p < k; ++p) sum += x[p] * y[p];
      float& dst = out[static_cast<int64_t>(j) * ldc + i];
      dst = al * sum + (be != 0.0f ? be * dst : 0.0f);
    }
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace kvsqueeze::kernels::cuda::emu

#undef cudaMallocAsync
#define cudaMallocAsync ::kvsqueeze::kernels::cuda::emu::malloc_async
#undef cudaFreeAsync
#define cudaFreeAsync ::kvsqueeze::kernels::cuda::emu::free_async
#undef cudaMemcpy
#define cudaMemcpy ::kvsqueeze::kernels::cuda::emu::copy
#undef cudaMemcpyAsync
#define cudaMemcpyAsync ::kvsqueeze::kernels::cuda::emu::copy_async
#undef cudaGetDeviceCount
#define cudaGetDeviceCount ::kvsqueeze::kernels::cuda::emu::device_count
#undef cudaSetDevice
#define cudaSetDevice ::kvsqueeze::kernels::cuda::emu::set_device
#undef cudaDeviceGetAttribute
#define cudaDeviceGetAttribute ::kvsqueeze::kernels::cuda::emu::device_attribute
#undef cudaGetLastError
#define cudaGetLastError ::kvsqueeze::kernels::cuda::emu::last_error
#undef cudaGetErrorString
#define cudaGetErrorString ::kvsqueeze::kernels::cuda::emu::error_string
#undef cublasCreate
#define cublasCreate ::kvsqueeze::kernels::cuda::emu::blas_create
#undef cublasDestroy
#define cublasDestroy ::kvsqueeze::kernels::cuda::emu::blas_destroy
#undef cublasGemmEx
#define cublasGemmEx ::kvsqueeze::kernels::cuda::emu::gemm_ex
