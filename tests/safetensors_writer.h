#pragma once
// Writes small safetensors files for tests of presses with learned weights (qfilter).
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_paths.h"

namespace test_safetensors {

// Writes a safetensors file holding `values` under `name` with the given dtype (F32 or BF16).
inline std::string write(const std::string& tag, const std::string& name, const std::vector<int64_t>& shape,
                              const std::vector<float>& values, const std::string& dtype = "F32", int64_t cut = 0) {
  const std::string path = test_paths::scratch_dir() + "/qfilter-" + tag + test_paths::process_tag() + ".safetensors";
  std::string data;
  for (float v : values) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    if (dtype == "BF16") {
      const uint16_t b = static_cast<uint16_t>(bits >> 16);
      data.append(reinterpret_cast<const char*>(&b), 2);
    } else {
      data.append(reinterpret_cast<const char*>(&bits), 4);
    }
  }
  nlohmann::json h;
  h[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {0, data.size()}}};
  const std::string header = h.dump();
  const uint64_t len = header.size();
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((len >> (8 * i)) & 0xff));
  out << header << data.substr(0, data.size() - static_cast<size_t>(cut));
  return path;
}

}  // namespace test_safetensors
