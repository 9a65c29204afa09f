// The device choice point: which backend a session runs on, and where a KV cache's runs live.
#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_kv_storage.h"
#include "backend/kv_storage.h"
#include "kvsqueeze/error.h"

namespace kvsqueeze {

const char* device_name(Device device) { return device == Device::Cuda ? "cuda" : "cpu"; }

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::Cpu;
  if (name == "cuda") return Device::Cuda;
  throw Error("unknown device '" + name + "' (valid: cpu, cuda)");
}

namespace backend {

std::unique_ptr<Backend> make_backend(Device device, const Model& model) {
  if (device == Device::Cpu) return std::make_unique<CpuBackend>(model);
  throw Error(std::string("device '") + device_name(device) + "' is not available: this build has only the cpu backend");
}

std::unique_ptr<KvStorage> make_kv_storage(Device device, const KvCacheShape& shape) {
  if (device == Device::Cpu) return std::make_unique<CpuKvStorage>(shape);
  throw Error(std::string("device '") + device_name(device) + "' is not available: this build has only the cpu backend");
}

}  // namespace backend
}  // namespace kvsqueeze
