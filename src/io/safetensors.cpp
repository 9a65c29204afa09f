#include "io/safetensors.h"

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/host_math.h"
#include "kvsqueeze/error.h"

namespace kvsqueeze {

SafetensorsTensor read_safetensors_tensor(const std::string& path, const std::string& name) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open safetensors file '" + path + "'");
  in.seekg(0, std::ios::end);
  const auto file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  uint8_t len_bytes[8];
  if (file_size < 8 || !in.read(reinterpret_cast<char*>(len_bytes), 8)) throw Error("'" + path + "' is not a safetensors file (too short)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | len_bytes[i];
  if (header_len == 0 || header_len > file_size - 8 || header_len > (uint64_t{100} << 20))
    throw Error("'" + path + "' is not a safetensors file (header length " + std::to_string(header_len) + ")");
  std::string header(static_cast<size_t>(header_len), '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(header);
  } catch (const std::exception&) {
    throw Error("'" + path + "' has a malformed safetensors header");
  }
  if (!h.is_object() || !h.contains(name)) throw Error("'" + path + "' has no tensor '" + name + "'");
  const auto& t = h[name];
  SafetensorsTensor out;
  std::string dtype;
  uint64_t begin = 0, end = 0;
  try {
    dtype = t.at("dtype").get<std::string>();
    out.shape = t.at("shape").get<std::vector<int64_t>>();
    const auto offsets = t.at("data_offsets").get<std::vector<uint64_t>>();
    if (offsets.size() != 2) throw std::runtime_error("offsets");
    begin = offsets[0];
    end = offsets[1];
  } catch (const std::exception&) {
    throw Error("'" + path + "': tensor '" + name + "' has a malformed entry");
  }
  const size_t elem = dtype == "F32" ? 4 : (dtype == "F16" || dtype == "BF16") ? 2 : 0;
  if (elem == 0) throw Error("'" + path + "': tensor '" + name + "' has dtype " + dtype + " (supported: F32, F16, BF16)");
  uint64_t count = 1;
  for (int64_t d : out.shape) {
    if (d < 0 || (d > 0 && count > (uint64_t{1} << 40) / static_cast<uint64_t>(d)))
      throw Error("'" + path + "': tensor '" + name + "' has an invalid shape");
    count *= static_cast<uint64_t>(d);
  }
  const uint64_t data_size = file_size - 8 - header_len;
  if (end < begin || end > data_size || end - begin != count * elem)
    throw Error("'" + path + "': tensor '" + name + "' data is out of bounds or of the wrong size (truncated file?)");
  std::vector<uint8_t> raw(static_cast<size_t>(end - begin));
  in.seekg(static_cast<std::streamoff>(8 + header_len + begin));
  if (!in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size())))
    throw Error("'" + path + "': cannot read tensor '" + name + "'");
  out.values.resize(static_cast<size_t>(count));
  for (size_t i = 0; i < out.values.size(); ++i) {
    if (elem == 4) {
      std::memcpy(&out.values[i], raw.data() + 4 * i, 4);
    } else {
      uint16_t bits;
      std::memcpy(&bits, raw.data() + 2 * i, 2);
      out.values[i] = dtype == "F16" ? host::fp16_to_fp32(bits) : host::bf16_to_fp32(bits);
    }
  }
  return out;
}

}  // namespace kvsqueeze
