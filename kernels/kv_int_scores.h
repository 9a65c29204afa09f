#pragma once
// Decode scores against q8_0 / q4_0 key rows in integers (AVX-512 VNNI): the few queries of a
// GQA group are rounded to 16 bits (one scale per query row, ~1e-5 relative: far below the keys'
// own 8- or 4-bit rounding), the keys' codes are widened to 16 bits, and VPDPWSSD does 32
// multiply-adds per instruction, twice the rate of f32 FMAs; each 32-element block's sum is
// scaled once per key. The queries are not rounded to 8 bits as llama.cpp does: that error
// would add to the keys'.
#include <cstdint>
#include <cstring>

#include "kernels/transpose16.h"
#include "kernels/variant.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define KVSQ_INT_KEY_SCORES 1
#include <immintrin.h>

namespace kvsqueeze::kernels::inline KVSQ_VARIANT::detail {

constexpr int64_t kKeyBlock = 32;

// Codes of one 32-element key block widened to 32 int16: q8_0 (2-byte scale, 32 int8) or q4_0
// (2-byte scale, 16 bytes of nibbles: element i the low nibble of byte i, i + 16 the high, minus 8).
template <bool Q4>
inline __m512i key_block_codes(const uint8_t* block) {
  if constexpr (Q4) {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
    const __m128i low = _mm_and_si128(packed, _mm_set1_epi8(15));
    const __m128i high = _mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(15));
    const __m256i codes = _mm256_sub_epi8(_mm256_set_m128i(high, low), _mm256_set1_epi8(8));
    return _mm512_cvtepi8_epi16(codes);
  } else {
    return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2)));
  }
}

// The queries as 16-bit integers, pairs of channels packed in one 32-bit word (what VPDPWSSD
// broadcasts), and each row's scale: q[t][c] ~= scale[t] * qi[t][c].
inline void queries_to_i16(const float* q, int64_t nq, int64_t d, int32_t* pairs, float* scale) {
  for (int64_t t = 0; t < nq; ++t) {
    const float* qt = q + t * d;
    __m512 mv = _mm512_setzero_ps();  // d is a multiple of 32
    for (int64_t c = 0; c < d; c += 16) mv = _mm512_max_ps(mv, _mm512_abs_ps(_mm512_loadu_ps(qt + c)));
    const float m = _mm512_reduce_max_ps(mv);
    scale[t] = m > 0.0f ? m / 32767.0f : 1.0f;
    const __m512 inv = _mm512_set1_ps(m > 0.0f ? 32767.0f / m : 0.0f);
    auto* qi = reinterpret_cast<int16_t*>(pairs + t * d / 2);
    for (int64_t c = 0; c < d; c += 16)  // round to nearest (the default MXCSR mode)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qi + c),
                          _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(qt + c), inv))));
  }
}

// out[t * ldo + j] for 16 key rows (row_bytes apart) and NQ queries: per block, the 16 keys'
// widened codes are 16 rows of 16 int16 pairs; transposed, pair p of all 16 keys is one vector,
// so each query's block sum is 16 VPDPWSSD into one vector of the 16 keys' sums.
template <bool Q4, int NQ>
inline void int_scores_of_16_keys(const uint8_t* rows, size_t row_bytes, int64_t d, const int32_t* pairs, const float* scale,
                                  float* out, int64_t ldo) {
  constexpr size_t kBlockBytes = Q4 ? 18 : 34;
  __m512 acc[NQ];
  for (auto& a : acc) a = _mm512_setzero_ps();
  alignas(64) uint16_t key_scales[16];
  for (int64_t b = 0; b < d / kKeyBlock; ++b) {
    __m512i kt[16];
    for (int j = 0; j < 16; ++j) {
      const uint8_t* block = rows + j * row_bytes + static_cast<size_t>(b) * kBlockBytes;
      std::memcpy(&key_scales[j], block, 2);
      kt[j] = key_block_codes<Q4>(block);
    }
    transpose16x16(kt);
    __m512i sums[NQ];
    for (auto& s : sums) s = _mm512_setzero_si512();
    const int32_t* qb = pairs + b * kKeyBlock / 2;
    for (int p = 0; p < 16; ++p)
      for (int t = 0; t < NQ; ++t) sums[t] = _mm512_dpwssd_epi32(sums[t], kt[p], _mm512_set1_epi32(qb[t * d / 2 + p]));
    const __m512 dk = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(key_scales)));
    for (int t = 0; t < NQ; ++t) acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[t]), dk, acc[t]);
  }
  for (int t = 0; t < NQ; ++t) _mm512_storeu_ps(out + t * ldo, _mm512_mul_ps(acc[t], _mm512_set1_ps(scale[t])));
}

template <bool Q4, int NQ = 1>
inline void int_scores_of_16_keys(int64_t nq, const uint8_t* rows, size_t row_bytes, int64_t d, const int32_t* pairs,
                                  const float* scale, float* out, int64_t ldo) {
  if constexpr (NQ < 16)
    if (nq != NQ) return int_scores_of_16_keys<Q4, NQ + 1>(nq, rows, row_bytes, d, pairs, scale, out, ldo);
  int_scores_of_16_keys<Q4, NQ>(rows, row_bytes, d, pairs, scale, out, ldo);
}

// Scores of the first n - n % 16 of n q8_0 (or q4_0) key rows for nq <= 16 queries of d
// channels (d a multiple of 32); returns how many keys it scored.
inline int64_t int_key_scores(bool q4, const uint8_t* rows, size_t row_bytes, int64_t n, int64_t d, const float* q, int64_t nq,
                              float* out, int64_t ldo) {
  if (nq > 16 || d % kKeyBlock != 0 || d > 1024 || n < 16) return 0;
  alignas(64) int32_t pairs[16 * 512];
  float scale[16];
  queries_to_i16(q, nq, d, pairs, scale);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const uint8_t* r = rows + static_cast<size_t>(j) * row_bytes;
    if (q4) int_scores_of_16_keys<true>(nq, r, row_bytes, d, pairs, scale, out + j, ldo);
    else int_scores_of_16_keys<false>(nq, r, row_bytes, d, pairs, scale, out + j, ldo);
  }
  return j;
}

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT::detail
#endif
