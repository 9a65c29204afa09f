#pragma once
// A minimal reader of safetensors files (8-byte header length, JSON header, raw little-endian
// data), for learned press weights published that way (Q-Filters). Validates everything it reads.
#include <cstdint>
#include <string>
#include <vector>

namespace kvsqueeze {

struct SafetensorsTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;  // converted from F32, F16 or BF16
};

// Reads tensor `name` of `path`; throws kvsqueeze::Error with one clear line on a missing file,
// a malformed or truncated file, a missing tensor or an unsupported dtype.
SafetensorsTensor read_safetensors_tensor(const std::string& path, const std::string& name);

}  // namespace kvsqueeze
