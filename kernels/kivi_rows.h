#pragma once
// Reading KIVI2 rows fast (kernels/kivi_quantize.h has the format and the reference readers):
// a byte's four 2-bit codes come from a 256-entry table as four floats, so a row reads as one
// multiply and one add per four values, the same two roundings as the reference (no FMA).
#include <array>
#include <cstdint>

#include "kernels/fp16.h"
#include "kernels/variant.h"
#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {

using KiviCodeTable = std::array<std::array<float, 4>, 256>;

inline const KiviCodeTable& kivi_code_table() {
  alignas(16) static const KiviCodeTable table = [] {
    KiviCodeTable t{};
    for (int b = 0; b < 256; ++b)
      for (int i = 0; i < 4; ++i) t[static_cast<size_t>(b)][static_cast<size_t>(i)] = static_cast<float>((b >> (2 * i)) & 3);
    return t;
  }();
  return table;
}

// dst[0:4] = codes of `byte` * scale[0:4] + min[0:4].
inline void kivi_four(uint8_t byte, const float* scale, const float* min, float* dst) {
  const float* q = kivi_code_table()[byte].data();
#if defined(__SSE2__)
  _mm_storeu_ps(dst, _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(q), _mm_loadu_ps(scale)), _mm_loadu_ps(min)));
#else
  for (int i = 0; i < 4; ++i) {
    const volatile float product = q[i] * scale[i];  // rounded before the add, as the reference
    dst[i] = product + min[i];
  }
#endif
}

// n value rows of d elements (consecutive 12-byte blocks of 32: f16 scale, f16 min, 8 code bytes).
inline void kivi_value_rows(const uint8_t* rows, int64_t n, int64_t d, float* dst) {
  for (int64_t b = 0; b < n * d / 32; ++b, rows += 12, dst += 32) {
    uint16_t h[2];
    __builtin_memcpy(h, rows, 4);
    const float s = fp16_to_fp32(h[0]), m = fp16_to_fp32(h[1]);
    const float sv[4] = {s, s, s, s}, mv[4] = {m, m, m, m};
    for (int i = 0; i < 8; ++i) kivi_four(rows[4 + i], sv, mv, dst + 4 * i);
  }
}

// n key rows of one group (codes rows d / 4 bytes apart), with its parameters (d f16 scales,
// d f16 minima).
inline void kivi_key_rows(const uint8_t* params, const uint8_t* codes, int64_t n, int64_t d, float* dst) {
  float s[1024], m[1024];  // head dimensions are far below this (the cache checks whole blocks of 32)
  const auto* h = reinterpret_cast<const uint16_t*>(params);
  for (int64_t c = 0; c < d; ++c) {
    s[c] = fp16_to_fp32(h[c]);
    m[c] = fp16_to_fp32(h[d + c]);
  }
  for (int64_t t = 0; t < n; ++t, codes += d / 4, dst += d)
    for (int64_t c = 0; c < d; c += 4) kivi_four(codes[c / 4], s + c, m + c, dst + c);
}

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
