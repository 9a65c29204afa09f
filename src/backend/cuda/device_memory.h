#pragma once
// Device memory of the CUDA backend: allocations ordered on the default stream (freed without a
// device-wide synchronisation), copies to and from the host, and the check that turns a CUDA
// error into one kvsqueeze::Error.
#include <cuda_runtime_api.h>

#include "kernels/cuda/launch.h"  // the namespace flavour: device, or emulated in tests
#ifdef KVSQ_CUDA_EMULATE
#include "kernels/cuda/emulated_runtime.h"
#endif

#include <cstddef>
#include <utility>

namespace kvsqueeze::backend::cuda::inline KVSQ_CUDA_FLAVOR {

// Throws kvsqueeze::Error "CUDA error in WHAT: ..." unless err is cudaSuccess.
void check(cudaError_t err, const char* what);

class DeviceBytes {
 public:
  DeviceBytes() = default;
  explicit DeviceBytes(size_t bytes);
  ~DeviceBytes();
  DeviceBytes(DeviceBytes&& other) noexcept : p_(std::exchange(other.p_, nullptr)), n_(std::exchange(other.n_, 0)) {}
  DeviceBytes& operator=(DeviceBytes&& other) noexcept;
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;

  void* data() const { return p_; }
  size_t size() const { return n_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }
  // Grows (contents lost) to at least `bytes`.
  void reserve(size_t bytes);

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

// Copies on the default stream, waiting for the work queued before them.
void to_device(void* dst, const void* src, size_t bytes);
void to_host(void* dst, const void* src, size_t bytes);
void device_copy(void* dst, const void* src, size_t bytes);

}  // namespace kvsqueeze::backend::cuda::inline KVSQ_CUDA_FLAVOR
