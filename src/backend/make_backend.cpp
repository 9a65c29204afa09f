// The device choice point: which backend a session runs on, and where a KV cache's runs live.
#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_kv_storage.h"
#include "backend/kv_storage.h"
#include "kvsqueeze/error.h"

#include <utility>

#if KVSQ_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_kv_storage.h"
#endif

namespace kvsqueeze {
namespace {
// Set by backend::override_backend (tests); empty: the built-in backend.
backend::BackendFactory& cuda_override() {
  static backend::BackendFactory factory;
  return factory;
}
}  // namespace

const char* device_name(Device device) { return device == Device::Cuda ? "cuda" : "cpu"; }

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::Cpu;
  if (name == "cuda") return Device::Cuda;
  throw Error("unknown device '" + name + "' (valid: cpu, cuda)");
}

bool device_available(Device device) {
  if (device == Device::Cpu) return true;
  if (cuda_override().available) return cuda_override().available();
#if KVSQ_HAVE_CUDA
  static const bool found = [] {
    int count = 0;
    const bool ok = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
    cudaGetLastError();  // no driver or no device: not an error to carry on
    return ok;
  }();
  return found;
#else
  return false;
#endif
}

Device default_device() { return device_available(Device::Cuda) ? Device::Cuda : Device::Cpu; }

bool device_built(Device device) {
#if KVSQ_HAVE_CUDA
  return true;
#else
  return device == Device::Cpu;
#endif
}

void require_device(Device device) {
  if (device_available(device)) return;
  if (!device_built(device))
    throw Error(std::string("device '") + device_name(device) + "' is not available: this build has only the cpu backend");
  throw Error(std::string("device '") + device_name(device) + "' is not available: no CUDA device was found");
}

namespace backend {
namespace {
[[noreturn]] void unavailable(Device device) {
  require_device(device);
  throw Error("internal: no backend for an available device");
}
}  // namespace

void override_backend(Device device, BackendFactory factory) {
  if (device != Device::Cuda) throw Error("internal: only the cuda backend can be replaced");
  cuda_override() = std::move(factory);
}

std::unique_ptr<Backend> make_backend(Device device, const Model& model) {
  if (device == Device::Cpu) return std::make_unique<CpuBackend>(model);
  if (cuda_override().make) return cuda_override().make(model);
#if KVSQ_HAVE_CUDA
  if (device_available(device)) return std::make_unique<cuda::CudaBackend>(model);
#endif
  unavailable(device);
}

std::unique_ptr<KvStorage> make_kv_storage(Device device, const KvCacheShape& shape) {
  if (device == Device::Cpu) return std::make_unique<CpuKvStorage>(shape);
  if (cuda_override().storage) return cuda_override().storage(shape);
#if KVSQ_HAVE_CUDA
  if (device_available(device)) return std::make_unique<cuda::CudaKvStorage>(shape);
#endif
  unavailable(device);
}

}  // namespace backend
}  // namespace kvsqueeze
