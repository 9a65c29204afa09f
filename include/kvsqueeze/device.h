#pragma once
// Where a session's forward pass runs and its KV cache lives.
#include <string>

namespace kvsqueeze {

enum class Device {
  Cpu,   // the SIMD kernels on host memory
  Cuda,  // reserved: no CUDA backend is built yet, sessions asking for it throw
};

const char* device_name(Device device);
// "cpu" | "cuda"; throws kvsqueeze::Error naming the valid choices on anything else.
Device parse_device(const std::string& name);

}  // namespace kvsqueeze
