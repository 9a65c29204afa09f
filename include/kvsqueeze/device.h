#pragma once
// Where a session's forward pass runs and its KV cache lives.
#include <string>

namespace kvsqueeze {

enum class Device {
  Cpu,   // the SIMD kernels on host memory
  Cuda,  // one NVIDIA GPU (builds with KVSQ_CUDA; float KV types)
};

const char* device_name(Device device);
// "cpu" | "cuda"; throws kvsqueeze::Error naming the valid choices on anything else.
Device parse_device(const std::string& name);
// Whether this build has the device's backend, and whether this machine can run it now.
bool device_built(Device device);
bool device_available(Device device);
// cuda when this build has it and a GPU is present, else cpu.
Device default_device();
// Throws kvsqueeze::Error saying why unless device_available(device) (what a session on it would
// throw; a server checks at start, before it makes any session).
void require_device(Device device);

}  // namespace kvsqueeze
