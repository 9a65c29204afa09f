// Panels of 16 rows for the VNNI panel kernels (layout: kernels/panel_packing.h).
#include "kernels/panel_packing.h"

#include <cstring>
#include <string>

#include "kernels/fp16.h"
#include "kernels/quant_blocks.h"
#include "kvsqueeze/error.h"

namespace kvsqueeze::kernels {

bool panel_packable(TensorType t) {
  return t == TensorType::Q4_0 || t == TensorType::Q5_0 || t == TensorType::Q8_0 || t == TensorType::Q4_K ||
         t == TensorType::Q6_K;
}

int64_t panel_unit_cols(TensorType t) { return t == TensorType::Q4_K || t == TensorType::Q6_K ? 256 : 32; }

size_t panel_unit_bytes(TensorType t) {
  switch (t) {
    case TensorType::Q8_0: return 32 + 512;
    case TensorType::Q5_0: return 32 + 256 + 64;
    case TensorType::Q4_0: return 32 + 256;
    case TensorType::Q4_K: return 64 + 8 * (32 + 256);
    case TensorType::Q6_K: return 32 + 256 + 8 * (256 + 128);
    default: return 0;
  }
}

size_t panel_packed_bytes(const WeightMatrix& w) {
  const int64_t panels = (w.rows + kPanelRows - 1) / kPanelRows;
  return static_cast<size_t>(panels * (w.cols / panel_unit_cols(w.type))) * panel_unit_bytes(w.type);
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

namespace {

// Codes 0..15 of element e of a block into the nibble pairs (Q4_0/Q5_0/Q4_K layout) at c8.
void put_nibble(uint8_t* c8, int64_t lane, int e, uint8_t code) {
  const int c = e / 4, byte = static_cast<int>(4 * lane + e % 4);
  c8[64 * (c % 4) + byte] = static_cast<uint8_t>(c8[64 * (c % 4) + byte] | (code & 15) << (c < 4 ? 0 : 4));
}

void pack_row_q4_k(const uint8_t* row, int64_t cols, int64_t lane, uint8_t* panel) {
  const size_t ub = panel_unit_bytes(TensorType::Q4_K);
  for (int64_t i = 0; i < cols / 256; ++i) {
    const uint8_t* b = row + static_cast<size_t>(i) * 144;
    uint8_t* unit = panel + static_cast<size_t>(i) * ub;
    std::memcpy(unit + 2 * lane, b, 2);       // d
    std::memcpy(unit + 32 + 2 * lane, b + 2, 2);  // dmin
    for (int j = 0; j < 8; ++j) {
      uint8_t* blk = unit + 64 + static_cast<size_t>(j) * (32 + 256);
      int sc, mn;
      detail::k_scale_min(b + 4, j, sc, mn);
      blk[lane] = static_cast<uint8_t>(sc);
      blk[16 + lane] = static_cast<uint8_t>(mn);
      const uint8_t* qs = b + 16 + 32 * (j / 2);
      for (int e = 0; e < 32; ++e) put_nibble(blk + 32, lane, e, static_cast<uint8_t>((qs[e] >> (4 * (j & 1))) & 15));
    }
  }
}

void pack_row_q6_k(const uint8_t* row, int64_t cols, int64_t lane, uint8_t* panel) {
  const size_t ub = panel_unit_bytes(TensorType::Q6_K);
  for (int64_t i = 0; i < cols / 256; ++i) {
    const uint8_t* b = row + static_cast<size_t>(i) * 210;
    uint8_t* unit = panel + static_cast<size_t>(i) * ub;
    std::memcpy(unit + 2 * lane, b + 208, 2);                                // d
    for (int j = 0; j < 16; ++j) unit[32 + 16 * j + lane] = b[192 + j];      // sub-block scales
    for (int pr = 0; pr < 8; ++pr) {
      uint8_t* c8 = unit + 288 + static_cast<size_t>(pr) * 384;
      for (int e = 0; e < 32; ++e) {
        const auto v = static_cast<uint8_t>(detail::q6k_value(b, 32 * pr + e));
        put_nibble(c8, lane, e, v);
        const int c = e / 4, byte = static_cast<int>(4 * lane + e % 4);
        c8[256 + 64 * (c / 4) + byte] = static_cast<uint8_t>(c8[256 + 64 * (c / 4) + byte] | (v >> 4) << (2 * (c % 4)));
      }
    }
  }
}

}  // namespace

void pack_panels(const WeightMatrix& w, uint8_t* out) {
  if (!panel_packable(w.type))
    throw Error("pack_panels: " + std::string(tensor_type_name(static_cast<uint32_t>(w.type))) + " is not packable");
  const int64_t uc = panel_unit_cols(w.type), nu = w.cols / uc;
  if (w.cols % uc != 0 || w.row_bytes != static_cast<size_t>(w.cols / tensor_type_info(w.type).block_size) * tensor_type_info(w.type).block_bytes)
    throw Error("pack_panels: rows must be whole blocks, back to back");
  const size_t ub = panel_unit_bytes(w.type);
  std::memset(out, 0, panel_packed_bytes(w));
  // One thread, on purpose (as every load-time packing): an OpenMP team started on the loading
  // thread would keep spinning beside the one that later decodes on another thread.
  uint8_t codes[32];
  for (int64_t r = 0; r < w.rows; ++r) {
    const uint8_t* row = w.data + static_cast<size_t>(r) * w.row_bytes;
    const int64_t p = r / kPanelRows, lane = r % kPanelRows;
    uint8_t* panel = out + static_cast<size_t>(p * nu) * ub;
    if (w.type == TensorType::Q4_K) {
      pack_row_q4_k(row, w.cols, lane, panel);
      continue;
    }
    if (w.type == TensorType::Q6_K) {
      pack_row_q6_k(row, w.cols, lane, panel);
      continue;
    }
    for (int64_t j = 0; j < nu; ++j) {
      uint8_t* blk = panel + static_cast<size_t>(j) * ub;
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
        put_nibble(c8, lane, e, codes[e]);
        if (w.type == TensorType::Q5_0 && (codes[e] & 16)) c8[256 + 8 * c + byte / 8] = static_cast<uint8_t>(c8[256 + 8 * c + byte / 8] | 1 << (byte % 8));
      }
    }
  }
}

float panel_weight(TensorType t, const uint8_t* panels, int64_t cols, int64_t row, int64_t col) {
  const int64_t uc = panel_unit_cols(t), nu = cols / uc, p = row / kPanelRows, lane = row % kPanelRows;
  const uint8_t* unit = panels + static_cast<size_t>(p * nu + col / uc) * panel_unit_bytes(t);
  const int64_t e = col % 32, c = e / 4, byte = 4 * lane + e % 4;
  auto nibble = [&](const uint8_t* c8) { return (c8[64 * (c % 4) + byte] >> (c < 4 ? 0 : 4)) & 15; };
  uint16_t h;
  if (t == TensorType::Q4_K) {
    const int64_t j = (col % 256) / 32;
    const uint8_t* blk = unit + 64 + static_cast<size_t>(j) * (32 + 256);
    std::memcpy(&h, unit + 2 * lane, 2);
    const float d = fp16_to_fp32(h);
    std::memcpy(&h, unit + 32 + 2 * lane, 2);
    const float dmin = fp16_to_fp32(h);
    const float ds = d * static_cast<float>(blk[lane]), dm = dmin * static_cast<float>(blk[16 + lane]);
    const float scaled = ds * static_cast<float>(nibble(blk + 32));  // rounded before the subtraction, as dequantize does
    return scaled - dm;
  }
  if (t == TensorType::Q6_K) {
    const int64_t j = (col % 256) / 16, pr = (col % 256) / 32;
    const uint8_t* c8 = unit + 288 + static_cast<size_t>(pr) * 384;
    std::memcpy(&h, unit + 2 * lane, 2);
    const int high = (c8[256 + 64 * (c / 4) + byte] >> (2 * (c % 4))) & 3;
    const float ds = fp16_to_fp32(h) * static_cast<float>(static_cast<int8_t>(unit[32 + 16 * j + lane]));
    return ds * static_cast<float>((nibble(c8) | high << 4) - 32);
  }
  std::memcpy(&h, unit + 2 * lane, 2);
  const float d = fp16_to_fp32(h);
  const uint8_t* c8 = unit + 32;
  if (t == TensorType::Q8_0) return d * static_cast<float>(c8[64 * c + byte] - 128);
  int code = nibble(c8);
  if (t == TensorType::Q5_0) {
    code |= ((c8[256 + 8 * c + byte / 8] >> (byte % 8)) & 1) << 4;
    return d * static_cast<float>(code - 16);
  }
  return d * static_cast<float>(code - 8);
}

}  // namespace kvsqueeze::kernels
