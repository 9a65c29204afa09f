#define KVSQ_CUDA_EMULATE 1
#include "emulated_backend.h"

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_kv_storage.h"

namespace emulated_cuda {

void use_for_device_cuda() {
  using namespace kvsqueeze;
  backend::BackendFactory f;
  f.available = [] { return true; };
  f.make = [](const Model& model) -> std::unique_ptr<backend::Backend> { return std::make_unique<backend::cuda::emulated::CudaBackend>(model); };
  f.storage = [](const KvCacheShape& shape) -> std::unique_ptr<backend::KvStorage> {
    return std::make_unique<backend::cuda::emulated::CudaKvStorage>(shape);
  };
  backend::override_backend(Device::Cuda, std::move(f));
}

}  // namespace emulated_cuda
