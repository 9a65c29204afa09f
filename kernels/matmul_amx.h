#pragma once
// AMX int8 tile kernel of the quantized-weight panel path (kernels/matmul.cpp), included in the
// `amx` variant only (-mamx-tile -mamx-int8, cmake/kernel_variants.cmake).
//
// Same numbers as the VNNI lane tiles, bit for bit: per weight sub-block j of SB codes (32, or 16
// for Q6_K) one exact integer dot of the activation codes and the weight codes, converted and scaled
// in fp32 in the same order:
//   symmetric types:  y[t][r] = sum_j fma(float(Q_j[t]·(U_j[r] - off)), S[j][r] * dx[t][j], .)
//   asymmetric types: y[t][r] = sum_j fma(float(Q_j[t]·U_j[r]), S[j][r] * dx[t][j], .) then fma(M[j][r], X[t][j], .)
// (the VNNI kernel adds -off * sum Q_j[t] to the unsigned dot: the same integer), so moving from
// the avx512 variant to this one changes no result (MatmulAmx.TilesGiveTheVnniPanelsNumbersBitForBit).
// One TDPBSSD/TDPBSUD makes the dots of 16 tokens x 16 rows over one sub-block: A = 16 tokens' SB
// codes straight from the quantized activations (stride kp), B = the panel's codes in the VNNI
// lane layout [SB/4][16 rows][4] that the AVX-512 kernel uses (for symmetric types shifted by -off
// to signed bytes, which every such type's codes fit). A GGUF type scales every sub-block
// separately, so each int32 tile is stored and scaled by AVX-512 (per token: cvt, mul, fma [, fma]).
// The next sub-block's tile product is issued before that scaling, but on the Xeon measured
// (docs/BENCHMARKS.md) the two barely overlap: the scaling bounds this kernel, not the tiles.
// Tiles: 0/1 dots (16 tokens x 64 B), 2/3 activations (16 x SB B), 4/5 weights (SB/4 x 64 B).
#include <immintrin.h>

#include <cstdint>

#include "kernels/variant.h"

namespace kvsqueeze::kernels::inline KVSQ_VARIANT::detail::amx {

constexpr int64_t kMinTokens = 16;  // one tile row per token: fewer tokens leave rows idle

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Loads the tile shapes for sub-blocks of SB codes (per thread, before its first tile instruction).
template <int SB>
inline void configure() {
  TileConfig c;
  c.rows[0] = c.rows[1] = 16, c.colsb[0] = c.colsb[1] = 64;
  c.rows[2] = c.rows[3] = 16, c.colsb[2] = c.colsb[3] = SB;
  c.rows[4] = c.rows[5] = SB / 4, c.colsb[4] = c.colsb[5] = 64;
  // GCC 12's _tile_loadconfig tells the compiler it reads 8 bytes: without this the shapes above
  // are dropped as dead stores (and the first tile instruction faults).
  __asm__ volatile("" : : "m"(c) : "memory");
  _tile_loadconfig(&c);
}
inline void release() { _tile_release(); }

// Tile numbers must be literals (GCC's intrinsics paste them into the assembly). The store is
// written out rather than _tile_stored, whose asm clobbers all memory and made GCC keep the 16
// accumulators in memory; this one names the 1 KiB it writes.
#define KVSQ_AMX_DOT(C, A, B, j)                        \
  do {                                                  \
    _tile_zero(C);                                      \
    _tile_loadd(A, q + (j) * SB, kp);                   \
    _tile_loadd(B, P + (j) * SB * 16, 64);              \
    if constexpr (ASYM)                                 \
      _tile_dpbsud(C, A, B);                            \
    else                                                \
      _tile_dpbssd(C, A, B);                            \
  } while (0)
#define KVSQ_AMX_STORE(C, buf)                                                                          \
  __asm__ volatile("tilestored %%tmm" #C ", (%1,%2,1)" : "=m"(*reinterpret_cast<int32_t(*)[256]>(buf)) \
                   : "r"(buf), "r"(int64_t{64}))

// Shifts a panel's codes by -off to signed bytes (symmetric types).
inline void to_signed_codes(uint8_t* P, int64_t n, int off) {
  const __m512i o = _mm512_set1_epi8(static_cast<char>(off));
  for (int64_t i = 0; i < n; i += 64) _mm512_store_si512(P + i, _mm512_sub_epi8(_mm512_load_si512(P + i), o));
}

// acc[t] (a vector over the panel's 16 rows) += sub-block j of token t, as the VNNI lane tile
// does it. dots: 16 tokens x 16 rows of int32. Per-token terms of sub-block j (dx, and X for the
// asymmetric types) sit at [16 * j + t] (transposed per block of 16 tokens).
template <int SB, bool ASYM>
[[gnu::always_inline]] inline void scale_subblock(__m512 (&acc)[16], const int32_t* dots, int64_t j, const float* S,
                                                  const float* M, const float* dxT, const float* XT) {
  const __m512 sv = _mm512_load_ps(S + 16 * j);
  const float* dx = dxT + 16 * j;
#pragma GCC unroll 16
  for (int t = 0; t < 16; ++t) {
    const __m512i ia = _mm512_load_si512(dots + 16 * t);
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia), _mm512_mul_ps(sv, _mm512_set1_ps(dx[t])), acc[t]);
    if constexpr (ASYM) acc[t] = _mm512_fmadd_ps(_mm512_load_ps(M + 16 * j), _mm512_set1_ps(XT[16 * j + t]), acc[t]);
  }
}

// One panel of 16 rows (P: codes in lane layout, signed for symmetric types; S/M: [j][16] scales
// and biases) against 16 tokens (q: their int8 codes, row stride kp, zero rows past the last
// token; dxT/XT: their per-sub-block terms, [j][16]). Writes y[t * ldy + r] for t < nt and the rows in rmask.
template <int SB, bool ASYM>
void panel_tile(const uint8_t* P, const float* S, const float* M, int64_t nsub, const int8_t* q, int64_t kp,
                const float* dxT, const float* XT, float* y, int64_t ldy, int nt,
                __mmask16 rmask) {
  // Tile loads read memory the compiler does not see them read (GCC's asm has no memory
  // operand): everything written before this call must be in memory now.
  __asm__ volatile("" ::: "memory");
  alignas(64) int32_t dots[2][256];
  __m512 acc[16];  // unrolled early so that GCC keeps the accumulators in registers
#pragma GCC unroll 16
  for (int t = 0; t < 16; ++t) acc[t] = _mm512_setzero_ps();
  // Per step j, in program order: the tile unit starts sub-block j+1, AVX-512 scales sub-block
  // j-1 (stored one step earlier), then sub-block j's tile is stored. Loads after a tile store
  // wait for it, so the store comes last.
  KVSQ_AMX_DOT(0, 2, 4, 0);
  for (int64_t j = 0; j < nsub; j += 2) {
    if (j + 1 < nsub) KVSQ_AMX_DOT(1, 3, 5, j + 1);
    if (j >= 1) scale_subblock<SB, ASYM>(acc, dots[1], j - 1, S, M, dxT, XT);
    KVSQ_AMX_STORE(0, dots[0]);
    if (j + 1 >= nsub) break;
    if (j + 2 < nsub) KVSQ_AMX_DOT(0, 2, 4, j + 2);
    scale_subblock<SB, ASYM>(acc, dots[0], j, S, M, dxT, XT);
    KVSQ_AMX_STORE(1, dots[1]);
  }
  scale_subblock<SB, ASYM>(acc, dots[(nsub - 1) & 1], nsub - 1, S, M, dxT, XT);
#pragma GCC unroll 16
  for (int t = 0; t < 16; ++t)
    if (t < nt) _mm512_mask_storeu_ps(y + t * ldy, rmask, acc[t]);
}

#undef KVSQ_AMX_DOT
#undef KVSQ_AMX_STORE

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT::detail::amx
