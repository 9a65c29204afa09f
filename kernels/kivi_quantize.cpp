// KIVI 2-bit quantization (formulas in kernels/kivi_quantize.h). Scalar: rows are quantized once,
// when a group fills; reading them is dequantize_*, called per tile by the attention kernels.
#include "kernels/kivi_quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/fp16.h"
#include "kernels/quant_blocks.h"

namespace kvsqueeze::kernels {

namespace {
constexpr int64_t kGroup = 32;
constexpr float kLevels = 3.0f;  // 2 bits: codes 0..3

// The stored (f16-rounded) scale and minimum of values whose extremes are lo and hi.
void group_params(float lo, float hi, uint16_t& scale, uint16_t& min) {
  min = fp32_to_fp16(lo);
  scale = fp32_to_fp16((hi - lo) / kLevels);
}

uint8_t code_of(float x, float scale, float min) {
  if (scale == 0.0f) return 0;
  const float t = std::clamp((x - min) / scale, 0.0f, kLevels);
  return static_cast<uint8_t>(std::nearbyint(t));
}

void put_code(uint8_t* codes, int64_t j, uint8_t q) { codes[j / 4] = static_cast<uint8_t>(codes[j / 4] | (q << (2 * (j % 4)))); }
uint8_t get_code(const uint8_t* codes, int64_t j) { return (codes[j / 4] >> (2 * (j % 4))) & 3; }
float read_back(uint8_t q, float scale, float min) { return detail::no_fma(static_cast<float>(q) * scale) + min; }
}  // namespace

void quantize_row_kivi2(const float* src, void* dst, int64_t n) {
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / kGroup; ++b, src += kGroup, out += 12) {
    const auto [lo, hi] = std::minmax_element(src, src + kGroup);
    uint16_t scale, min;
    group_params(*lo, *hi, scale, min);
    std::memcpy(out, &scale, 2);
    std::memcpy(out + 2, &min, 2);
    std::memset(out + 4, 0, 8);
    const float s = fp16_to_fp32(scale), m = fp16_to_fp32(min);
    for (int64_t j = 0; j < kGroup; ++j) put_code(out + 4, j, code_of(src[j], s, m));
  }
}

void dequantize_row_kivi2(const void* src, float* dst, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kGroup; ++b, in += 12, dst += kGroup) {
    uint16_t scale, min;
    std::memcpy(&scale, in, 2);
    std::memcpy(&min, in + 2, 2);
    const float s = fp16_to_fp32(scale), m = fp16_to_fp32(min);
    for (int64_t j = 0; j < kGroup; ++j) dst[j] = read_back(get_code(in + 4, j), s, m);
  }
}

void quantize_group_kivi2(const float* rows, int64_t d, void* params, uint8_t* codes, int64_t code_stride) {
  auto* scales = static_cast<uint16_t*>(params);
  uint16_t* mins = scales + d;
  for (int64_t t = 0; t < kGroup; ++t) std::memset(codes + t * code_stride, 0, static_cast<size_t>(d / 4));
  for (int64_t c = 0; c < d; ++c) {
    float lo = rows[c], hi = rows[c];
    for (int64_t t = 1; t < kGroup; ++t) {
      lo = std::min(lo, rows[t * d + c]);
      hi = std::max(hi, rows[t * d + c]);
    }
    group_params(lo, hi, scales[c], mins[c]);
    const float s = fp16_to_fp32(scales[c]), m = fp16_to_fp32(mins[c]);
    for (int64_t t = 0; t < kGroup; ++t) put_code(codes + t * code_stride, c, code_of(rows[t * d + c], s, m));
  }
}

void dequantize_keys_kivi2(const void* params, const uint8_t* codes, int64_t n, float* dst, int64_t d) {
  const auto* scales = static_cast<const uint16_t*>(params);
  float s[1024], m[1024];  // head dimensions are far below this; wider ones go row by row
  if (d > 1024) {
    for (int64_t t = 0; t < n; ++t) dequantize_key_kivi2(params, codes + t * (d / 4), dst + t * d, d);
    return;
  }
  for (int64_t c = 0; c < d; ++c) {
    s[c] = fp16_to_fp32(scales[c]);
    m[c] = fp16_to_fp32(scales[d + c]);
  }
  for (int64_t t = 0; t < n; ++t, codes += d / 4, dst += d)
    for (int64_t c = 0; c < d; ++c) dst[c] = read_back(get_code(codes, c), s[c], m[c]);
}

void dequantize_key_kivi2(const void* params, const uint8_t* codes, float* dst, int64_t d) {
  const auto* scales = static_cast<const uint16_t*>(params);
  const uint16_t* mins = scales + d;
  for (int64_t c = 0; c < d; ++c) dst[c] = read_back(get_code(codes, c), fp16_to_fp32(scales[c]), fp16_to_fp32(mins[c]));
}

}  // namespace kvsqueeze::kernels
