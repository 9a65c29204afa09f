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
    case TensorType::Q6_K: return kQ6KPairsAt + 8 * kQ6KPairBytes;
    default: return 0;
  }
}

size_t panel_packed_bytes(const WeightMatrix& w) {
  const int64_t panels = (w.rows + kPanelRows - 1) / kPanelRows;
  return static_cast<size_t>(panels * (w.cols / panel_unit_cols(w.type))) * panel_unit_bytes(w.type);
}

namespace {

// Packing moves 4-code words: a panel's 32-bit lane of a chunk is 4 consecutive codes of a row,
// and the GGUF layouts keep consecutive codes in consecutive bytes (or nibbles, or 2-bit fields of
// consecutive bytes), so each lane is a word of the row shifted and masked: ~0.1 s for the default
// model's 400 MB, where a code at a time took ~1.4 s.
using detail::load_u32;
inline void put_word(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

constexpr uint32_t kLow4 = 0x0F0F0F0Fu;

// A block's 4 nibble pairs (Q4_0 layout: pair c holds codes 4c.. low, 16 + 4c.. high) from the word
// of 4 codes at lo + 4c and at lo + 16 + 4c, each byte's code taken at bit `shift`.
inline void put_nibble_pairs(uint8_t* c8, int64_t lane, const uint8_t* lo, int shift) {
  for (int c = 0; c < 4; ++c)
    put_word(c8 + 64 * c + 4 * lane, ((load_u32(lo + 4 * c) >> shift) & kLow4) | ((load_u32(lo + 16 + 4 * c) >> shift) & kLow4) << 4);
}

void pack_row_legacy(TensorType t, const uint8_t* row, int64_t nb, int64_t lane, uint8_t* panel) {
  const size_t ub = panel_unit_bytes(t), bb = tensor_type_info(t).block_bytes;
  for (int64_t j = 0; j < nb; ++j) {
    const uint8_t* b = row + static_cast<size_t>(j) * bb;
    uint8_t* blk = panel + static_cast<size_t>(j) * ub;
    std::memcpy(blk + 2 * lane, b, 2);  // the f16 scale
    uint8_t* c8 = blk + 32;
    if (t == TensorType::Q8_0) {  // codes q + 128: the sign bit flipped
      for (int c = 0; c < 8; ++c) put_word(c8 + 64 * c + 4 * lane, load_u32(b + 2 + 4 * c) ^ 0x80808080u);
      continue;
    }
    // Q4_0/Q5_0: qs[i] holds element i low and i + 16 high, so its words are the nibble pairs as is.
    const uint8_t* qs = b + (t == TensorType::Q5_0 ? 6 : 2);
    for (int c = 0; c < 4; ++c) put_word(c8 + 64 * c + 4 * lane, load_u32(qs + 4 * c));
    if (t == TensorType::Q5_0) {  // chunk c's fifth bits: bits 4 lane.. of its 64-bit mask
      const uint32_t qh = load_u32(b + 2);
      for (int c = 0; c < 8; ++c) {
        uint8_t& m = c8[256 + 8 * c + lane / 2];
        m = static_cast<uint8_t>(m | ((qh >> (4 * c)) & 15) << (4 * (lane % 2)));
      }
    }
  }
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
      put_nibble_pairs(blk + 32, lane, b + 16 + 32 * (j / 2), 4 * (j & 1));  // block j: qs's low or high nibbles
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
      // Columns 32 pr..: low 4 bits in ql[64 h + 32 (c4 & 1) + e] at bit 4 (c4 >> 1), top 2 bits in
      // qh[32 h + e] at bit 2 c4 (h = pr / 4, c4 = pr % 4; as detail::q6k_value).
      const int h = pr / 4, c4 = pr % 4;
      uint8_t* c8 = unit + kQ6KPairsAt + static_cast<size_t>(pr) * kQ6KPairBytes;
      put_nibble_pairs(c8, lane, b + 64 * h + 32 * (c4 & 1), 4 * (c4 >> 1));
      const uint8_t* qh = b + 128 + 32 * h;
      for (int v = 0; v < 2; ++v) {  // chunk 4 v + m's top bits at bit 2 m of vector v
        uint32_t highs = 0;
        for (int m = 0; m < 4; ++m) highs |= ((load_u32(qh + 16 * v + 4 * m) >> (2 * c4)) & 0x03030303u) << (2 * m);
        put_word(c8 + 256 + 64 * v + 4 * lane, highs);
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
  for (int64_t r = 0; r < w.rows; ++r) {
    const uint8_t* row = w.data + static_cast<size_t>(r) * w.row_bytes;
    const int64_t p = r / kPanelRows, lane = r % kPanelRows;
    uint8_t* panel = out + static_cast<size_t>(p * nu) * ub;
    if (w.type == TensorType::Q4_K) pack_row_q4_k(row, w.cols, lane, panel);
    else if (w.type == TensorType::Q6_K) pack_row_q6_k(row, w.cols, lane, panel);
    else pack_row_legacy(w.type, row, nu, lane, panel);
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
    const uint8_t* c8 = unit + kQ6KPairsAt + static_cast<size_t>(pr) * kQ6KPairBytes;
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
