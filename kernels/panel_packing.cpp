// Panels of 16 rows for the VNNI panel kernels (layout: kernels/panel_packing.h).
#include "kernels/panel_packing.h"

#include <cstring>
#include <string>

#include "kernels/fp16.h"
#include "kvsqueeze/error.h"

namespace kvsqueeze::kernels {

bool panel_packable(TensorType t) { return t == TensorType::Q4_0 || t == TensorType::Q5_0 || t == TensorType::Q8_0; }

size_t panel_block_bytes(TensorType t) {
  switch (t) {
    case TensorType::Q8_0: return 32 + 512;
    case TensorType::Q5_0: return 32 + 256 + 64;
    case TensorType::Q4_0: return 32 + 256;
    default: return 0;
  }
}

size_t panel_packed_bytes(const WeightMatrix& w) {
  const int64_t panels = (w.rows + kPanelRows - 1) / kPanelRows;
  return static_cast<size_t>(panels * (w.cols / 32)) * panel_block_bytes(w.type);
}

namespace {

// The 32 codes (GGUF value + offset, 0..255) and the f16 scale bits of block `blk` of a GGUF row.
void block_codes(TensorType t, const uint8_t* row, int64_t blk, uint8_t codes[32], uint16_t& scale) {
  const uint8_t* b = row + static_cast<size_t>(blk) * tensor_type_info(t).block_bytes;
  std::memcpy(&scale, b, 2);
  if (t == TensorType::Q8_0) {
    for (int i = 0; i < 32; ++i) codes[i] = static_cast<uint8_t>(static_cast<int8_t>(b[2 + i]) + 128);
    return;
  }
  // Q4_0/Q5_0: element i in the low nibble of qs[i % 16] (i < 16) or the high one (i >= 16).
  const uint8_t* qs = b + (t == TensorType::Q5_0 ? 6 : 2);
  uint32_t qh = 0;
  if (t == TensorType::Q5_0) std::memcpy(&qh, b + 2, 4);
  for (int i = 0; i < 32; ++i) {
    const int nib = i < 16 ? qs[i] & 15 : qs[i - 16] >> 4;
    codes[i] = static_cast<uint8_t>(nib | (t == TensorType::Q5_0 ? ((qh >> i) & 1) << 4 : 0));
  }
}

}  // namespace

void pack_panels(const WeightMatrix& w, uint8_t* out) {
  if (!panel_packable(w.type))
    throw Error("pack_panels: " + std::string(tensor_type_name(static_cast<uint32_t>(w.type))) + " is not packable");
  const int64_t nb = w.cols / 32;
  if (w.cols % 32 != 0 || w.row_bytes != static_cast<size_t>(nb) * tensor_type_info(w.type).block_bytes)
    throw Error("pack_panels: rows must be whole blocks, back to back");
  const size_t bb = panel_block_bytes(w.type);
  std::memset(out, 0, panel_packed_bytes(w));
  // One thread, on purpose (as every load-time packing): an OpenMP team started on the loading
  // thread would keep spinning beside the one that later decodes on another thread.
  uint8_t codes[32];
  for (int64_t r = 0; r < w.rows; ++r) {
    const uint8_t* row = w.data + static_cast<size_t>(r) * w.row_bytes;
    const int64_t p = r / kPanelRows, lane = r % kPanelRows;
    for (int64_t j = 0; j < nb; ++j) {
      uint8_t* blk = out + static_cast<size_t>(p * nb + j) * bb;
      uint16_t scale;
      block_codes(w.type, row, j, codes, scale);
      std::memcpy(blk + 2 * lane, &scale, 2);
      uint8_t* c8 = blk + 32;
      for (int e = 0; e < 32; ++e) {
        const int c = e / 4, byte = static_cast<int>(4 * lane + e % 4);
        if (w.type == TensorType::Q8_0) {
          c8[64 * c + byte] = codes[e];
          continue;
        }
        c8[64 * (c % 4) + byte] = static_cast<uint8_t>(c8[64 * (c % 4) + byte] | (codes[e] & 15) << (c < 4 ? 0 : 4));
        if (w.type == TensorType::Q5_0 && (codes[e] & 16)) c8[256 + 8 * c + byte / 8] = static_cast<uint8_t>(c8[256 + 8 * c + byte / 8] | 1 << (byte % 8));
      }
    }
  }
}

float panel_weight(TensorType t, const uint8_t* panels, int64_t cols, int64_t row, int64_t col) {
  const int64_t nb = cols / 32, p = row / kPanelRows, lane = row % kPanelRows, j = col / 32, e = col % 32;
  const uint8_t* blk = panels + static_cast<size_t>(p * nb + j) * panel_block_bytes(t);
  uint16_t h;
  std::memcpy(&h, blk + 2 * lane, 2);
  const float d = fp16_to_fp32(h);
  const int64_t c = e / 4, byte = 4 * lane + e % 4;
  const uint8_t* c8 = blk + 32;
  if (t == TensorType::Q8_0) return d * static_cast<float>(c8[64 * c + byte] - 128);
  int code = (c8[64 * (c % 4) + byte] >> (c < 4 ? 0 : 4)) & 15;
  if (t == TensorType::Q5_0) {
    code |= ((c8[256 + 8 * c + byte / 8] >> (byte % 8)) & 1) << 4;
    return d * static_cast<float>(code - 16);
  }
  return d * static_cast<float>(code - 8);
}

}  // namespace kvsqueeze::kernels
