#pragma once
// 16x16 transposes of 32-bit elements with AVX-512 shuffles (the panel layouts of the matmul
// kernels). Only in variants compiled with AVX-512.
#include <cstddef>
#include <cstdint>

#include "kernels/variant.h"

#if defined(__AVX512F__)
#include <immintrin.h>

namespace kvsqueeze::kernels::inline KVSQ_VARIANT::detail {

// 16x16 transpose of 32-bit elements held in registers, in place: afterwards r[k] holds element
// k of every input row. 64 shuffles, no gathers.
[[gnu::always_inline]] inline void transpose16x16(__m512i (&r)[16]) {
  __m512i t[16];
  for (int i = 0; i < 8; ++i) {  // per 128-bit lane L: [a4L b4L a4L+1 b4L+1], [a4L+2 b4L+2 ...]
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int j = 0; j < 4; ++j) {  // r[4j+c] lane L = rows 4j..4j+3 at column 4L+c
    r[4 * j + 0] = _mm512_unpacklo_epi64(t[4 * j], t[4 * j + 2]);
    r[4 * j + 1] = _mm512_unpackhi_epi64(t[4 * j], t[4 * j + 2]);
    r[4 * j + 2] = _mm512_unpacklo_epi64(t[4 * j + 1], t[4 * j + 3]);
    r[4 * j + 3] = _mm512_unpackhi_epi64(t[4 * j + 1], t[4 * j + 3]);
  }
  for (int c = 0; c < 4; ++c) {  // 4x4 transpose of 128-bit lanes
    const __m512i v0 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x44);
    const __m512i v1 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xee);
    const __m512i v2 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x44);
    const __m512i v3 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xee);
    t[0 + c] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    t[4 + c] = _mm512_shuffle_i32x4(v0, v2, 0xdd);
    t[8 + c] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    t[12 + c] = _mm512_shuffle_i32x4(v1, v3, 0xdd);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// The same from memory: row r = 64 bytes at src + r*ld; writes 16 vectors of 64 bytes to dst
// (64-byte aligned), vector k holding element k of every row.
inline void transpose16x16(const uint8_t* src, size_t ld, uint8_t* dst) {
  __m512i r[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(src + static_cast<size_t>(i) * ld);
  transpose16x16(r);
  for (int i = 0; i < 16; ++i) _mm512_store_si512(dst + 64 * i, r[i]);
}

// 16 rows of `width` 32-bit elements (width a multiple of 16, row stride ld bytes) -> dst[k][16].
inline void transpose_rows16(const uint8_t* src, size_t ld, int64_t width, uint8_t* dst) {
  for (int64_t c = 0; c < width; c += 16) transpose16x16(src + 4 * c, ld, dst + 64 * c);
}

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT::detail
#endif  // __AVX512F__
