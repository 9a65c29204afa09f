// Random quantized weight matrices for the kernel micro-benchmarks: random codes with small finite
// scales (every fp16 scale field at its type's offsets), so the dot products stay finite.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/fp16.h"
#include "kernels/matmul.h"
#include "kvsqueeze/tensor_type.h"

namespace kvsqueeze::bench {

struct Layout {
  int64_t elems;
  size_t bytes;
};
inline Layout layout_of(TensorType t) {
  const auto& info = tensor_type_info(t);
  return {info.block_size, info.block_bytes};
}
inline std::string name_of(TensorType t) { return tensor_type_name(static_cast<uint32_t>(t)); }

inline uint64_t next_rand() {
  static uint64_t state = 0x9e3779b97f4a7c15ull;
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}

struct RandomWeights {
  std::vector<uint8_t> data;
  kernels::WeightMatrix w;
};

inline void fill_random_weights(RandomWeights& out, TensorType t, int64_t rows, int64_t cols) {
  const Layout l = layout_of(t);
  const size_t row_bytes = static_cast<size_t>(cols / l.elems) * l.bytes;
  auto& d = out.data;
  d.resize(row_bytes * static_cast<size_t>(rows));
  for (size_t i = 0; i + 8 <= d.size(); i += 8) {
    uint64_t v = next_rand();
    std::memcpy(&d[i], &v, 8);
  }
  auto f16 = [&](size_t off, float v) {
    uint16_t h = kernels::fp32_to_fp16(v);
    std::memcpy(&d[off], &h, 2);
  };
  const size_t nb = d.size() / l.bytes;
  for (size_t b = 0; b < nb; ++b) {
    const size_t o = b * l.bytes;
    const float s = 0.001f * static_cast<float>(next_rand() % 1000) / 1000.0f;
    switch (t) {
      case TensorType::F16: f16(o, s - 0.0005f); break;
      case TensorType::BF16: d[o + 1] = static_cast<uint8_t>(0x3c + (d[o + 1] & 1)); break;
      case TensorType::F32: {
        float v = s - 0.0005f;
        std::memcpy(&d[o], &v, 4);
        break;
      }
      case TensorType::Q4_1:
      case TensorType::Q5_1:
      case TensorType::Q4_K:
      case TensorType::Q5_K:
        f16(o, s);
        f16(o + 2, s);
        break;
      case TensorType::Q6_K: f16(o + 208, s); break;
      default: f16(o, s); break;
    }
  }
  out.w = kernels::WeightMatrix{t, d.data(), rows, cols, row_bytes};
}

}  // namespace kvsqueeze::bench
