#include "backend/cuda/device_memory.h"

#include <string>

#include "kvsqueeze/error.h"

namespace kvsqueeze::backend::cuda::inline KVSQ_CUDA_FLAVOR {

void check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();  // clear a sticky launch error so that the next call reports its own
  throw Error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

DeviceBytes::DeviceBytes(size_t bytes) : n_(bytes) {
  if (bytes > 0) check(cudaMallocAsync(&p_, bytes, nullptr), "allocating device memory");
}

DeviceBytes::~DeviceBytes() {
  if (p_) cudaFreeAsync(p_, nullptr);
}

DeviceBytes& DeviceBytes::operator=(DeviceBytes&& other) noexcept {
  if (this != &other) {
    if (p_) cudaFreeAsync(p_, nullptr);
    p_ = std::exchange(other.p_, nullptr);
    n_ = std::exchange(other.n_, 0);
  }
  return *this;
}

void DeviceBytes::reserve(size_t bytes) {
  if (bytes > n_) *this = DeviceBytes(bytes);
}

void to_device(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "copying to the device");
}

void to_host(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "copying from the device");
}

void device_copy(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, nullptr), "copying on the device");
}

}  // namespace kvsqueeze::backend::cuda::inline KVSQ_CUDA_FLAVOR
