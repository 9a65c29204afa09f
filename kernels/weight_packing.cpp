// Block-interleaved packing of Q4_0 / Q5_0 / Q8_0 rows (layout: kernels/weight_packing.h).
#include "kernels/weight_packing.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "kernels/fp16.h"
#include "kvsqueeze/error.h"

namespace kvsqueeze::kernels {
namespace {

constexpr int64_t kGroup = kPackedGroupBlocks;

// Offsets inside a group of n blocks.
struct GroupLayout {
  size_t qh, codes;
};
GroupLayout group_layout(TensorType t, int64_t n) {
  const size_t qh = static_cast<size_t>(2 * n);
  return {qh, qh + (t == TensorType::Q5_0 ? static_cast<size_t>(4 * n) : 0)};
}

}  // namespace

bool packable(TensorType t) { return t == TensorType::Q4_0 || t == TensorType::Q5_0 || t == TensorType::Q8_0; }

bool packing_pays(TensorType t) { return t == TensorType::Q4_0 || t == TensorType::Q5_0; }

void pack_weights(const WeightMatrix& w, uint8_t* out) {
  if (!packable(w.type)) throw Error("pack_weights: " + std::string(tensor_type_name(static_cast<uint32_t>(w.type))) + " is not packable");
  const size_t bb = tensor_type_info(w.type).block_bytes;
  const int64_t nb = w.cols / 32;
  if (w.cols % 32 != 0 || w.row_bytes != static_cast<size_t>(nb) * bb)
    throw Error("pack_weights: rows must be whole blocks, back to back");
  // GGUF keeps element i of a Q4_0/Q5_0 block in the low nibble of qs[i % 16] and element i + 16 in
  // the high one, which is exactly a packed pair (chunks p and p + 4 = elements 4p+j and 4p+16+j):
  // every 4-byte word moves whole. Q5_0's fifth bits move 4 at a time, Q8_0's codes 4 bytes at a time.
  // One thread, on purpose: an OpenMP team started here, on whatever thread loads the model, would
  // keep its workers spinning beside the team that later decodes on another thread (the Python
  // package decodes on a helper thread: measured 16.8 vs 12.1 ms per token). It takes ~0.1 s.
  for (int64_t r = 0; r < w.rows; ++r) {
    const uint8_t* src = w.data + static_cast<size_t>(r) * w.row_bytes;
    uint8_t* dst = out + static_cast<size_t>(r) * w.row_bytes;
    std::memset(dst, 0, w.row_bytes);
    for (int64_t g0 = 0; g0 < nb; g0 += kGroup) {
      const int64_t n = std::min(kGroup, nb - g0);
      uint8_t* grp = dst + static_cast<size_t>(g0) * bb;
      const GroupLayout gl = group_layout(w.type, n);
      for (int64_t l = 0; l < n; ++l) {
        const uint8_t* b = src + static_cast<size_t>(g0 + l) * bb;
        std::memcpy(grp + 2 * l, b, 2);  // scale
        if (w.type == TensorType::Q8_0) {
          for (int c = 0; c < 8; ++c) {
            uint32_t v;
            std::memcpy(&v, b + 2 + 4 * c, 4);
            v ^= 0x80808080u;  // int8 -> unsigned, q + 128
            std::memcpy(grp + gl.codes + static_cast<size_t>(c * 4 * n + 4 * l), &v, 4);
          }
          continue;
        }
        const uint8_t* qs = b + (w.type == TensorType::Q5_0 ? 6 : 2);
        for (int p = 0; p < 4; ++p) std::memcpy(grp + gl.codes + static_cast<size_t>(p * 4 * n + 4 * l), qs + 4 * p, 4);
        if (w.type == TensorType::Q5_0) {
          uint32_t qh;
          std::memcpy(&qh, b + 2, 4);
          for (int c = 0; c < 8; ++c) {  // bits 4c..4c+3 of the block -> bit 4n*c + 4l of the stream
            const size_t bit = static_cast<size_t>(c * 4 * n + 4 * l);
            grp[gl.qh + bit / 8] = static_cast<uint8_t>(grp[gl.qh + bit / 8] | ((qh >> (4 * c)) & 15) << (bit % 8));
          }
        }
      }
    }
  }
}

float packed_weight(TensorType t, const uint8_t* row, int64_t cols, int64_t e) {
  const size_t bb = tensor_type_info(t).block_bytes;
  const int64_t nb = cols / 32, blk = e / 32, i = e % 32;
  const int64_t g0 = blk / kGroup * kGroup, n = std::min(kGroup, nb - g0), l = blk - g0;
  const uint8_t* grp = row + static_cast<size_t>(g0) * bb;
  const GroupLayout gl = group_layout(t, n);
  uint16_t h;
  std::memcpy(&h, grp + 2 * l, 2);
  const float d = fp16_to_fp32(h);
  const int64_t c = i / 4, lane_byte = 4 * l + i % 4;
  if (t == TensorType::Q8_0) return d * static_cast<float>(grp[gl.codes + static_cast<size_t>(c * 4 * n + lane_byte)] - 128);
  int q = (grp[gl.codes + static_cast<size_t>((c % 4) * 4 * n + lane_byte)] >> (c < 4 ? 0 : 4)) & 15;
  if (t == TensorType::Q5_0) {
    const size_t bit = static_cast<size_t>(c * 4 * n + lane_byte);
    q |= ((grp[gl.qh + bit / 8] >> (bit % 8)) & 1) << 4;
    return d * static_cast<float>(q - 16);
  }
  return d * static_cast<float>(q - 8);
}

}  // namespace kvsqueeze::kernels
