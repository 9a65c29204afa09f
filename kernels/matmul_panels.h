#pragma once
// Panel kernel over weights packed in panels of 16 rows at load time (layout: kernels/panel_packing.h),
// included in kernels/matmul.cpp's AVX-512 VNNI variants. It is the lane tile of the unpacked panel
// path (16 rows x up to 8 tokens in registers, one vpdpbusd per 4 codes of 16 rows and a token, the
// float scale work once per block of 32 columns), but the codes come from the packed panel with a
// shift and an AND (plus a masked add for Q5_0's fifth bit) instead of being unpacked and transposed
// into a buffer for every product. The integer dots and float steps are the unpacked panels', in the
// same order, so the results are theirs to the bit; and a token's result depends on nothing but its
// own activations: the decode of one token and a batch of many give each token the same numbers.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/panel_packing.h"
#include "kernels/variant.h"
#include "kvsqueeze/tensor_type.h"

namespace kvsqueeze::kernels::inline KVSQ_VARIANT::detail::panels {

// A token's quantized activations as matmul makes them: int8 codes q (kp per token), per block of
// 32 a scale dx and either the offset correction corr = -offset * sum(q) (symmetric types) or
// X = dx * sum(q) (Q4_K, whose mins multiply it) (nsp per token).
struct Acts {
  const int8_t* q;
  int64_t kp;
  const float* dxs;
  const int32_t* corr;
  const float* X;
  int64_t nsp;
};

// The 8 chunks (4 codes of each of 16 rows) of one block of a panel, as unsigned bytes.
template <TensorType T>
inline void expand_codes(const uint8_t* c8, __m512i (&w)[8]) {
  if constexpr (T == TensorType::Q8_0) {
    for (int c = 0; c < 8; ++c) w[c] = _mm512_loadu_si512(c8 + 64 * c);
  } else {
    const __m512i low = _mm512_set1_epi8(0x0F);
    for (int c = 0; c < 4; ++c) {
      const __m512i b = _mm512_loadu_si512(c8 + 64 * c);
      w[c] = _mm512_and_si512(b, low);
      w[c + 4] = _mm512_and_si512(_mm512_srli_epi16(b, 4), low);
    }
    if constexpr (T == TensorType::Q5_0) {
      const __m512i fifth = _mm512_set1_epi8(16);
      for (int c = 0; c < 8; ++c) {
        __mmask64 m;
        std::memcpy(&m, c8 + 256 + 8 * c, 8);
        w[c] = _mm512_mask_add_epi8(w[c], m, w[c], fifth);
      }
    }
  }
}

// 16 f16 values at p, as fp32 (the rows' scales of a panel unit).
inline __m512 f16x16(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }

inline int32_t load_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// How far ahead the tile prefetches, in blocks (~6-9 KB).
constexpr int64_t kPrefetchBlocks = 16;

// The integer dot products of one block's 16 rows (codes w) with a token's 32 codes q, plus init:
// two chains of 4 (integer sums are exact: the same value as one chain of 8).
inline __m512i block_dot(const __m512i (&w)[8], const int8_t* q, __m512i init) {
  __m512i i0 = init, i1 = _mm512_setzero_si512();
  for (int c = 0; c < 8; c += 2) {
    i0 = _mm512_dpbusd_epi32(i0, w[c], _mm512_set1_epi32(load_i32(q + 4 * c)));
    i1 = _mm512_dpbusd_epi32(i1, w[c + 1], _mm512_set1_epi32(load_i32(q + 4 * c + 4)));
  }
  return _mm512_add_epi32(i0, i1);
}

// A Q4_K block's 16 scales d*sc and mins -(dmin*mn), as the unpacked panels compute them.
inline void q4_k_scales(__m512 d, __m512 dmin, const uint8_t* blk, __m512& sv, __m512& mv) {
  const auto bytes16 = [](const uint8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  };
  sv = _mm512_mul_ps(d, bytes16(blk));
  mv = _mm512_xor_ps(_mm512_mul_ps(dmin, bytes16(blk + 16)), _mm512_set1_ps(-0.0f));
}

// y[t * ldy + r] for the panel's rows (rmask) and tokens t0..t0+NT-1.
template <TensorType T, int NT>
void tile(const uint8_t* panel, int64_t nb, const Acts& a, int64_t t0, float* y, int64_t ldy, __mmask16 rmask) {
  const size_t bb = panel_unit_bytes(T);
  __m512 fa[NT];
  for (int t = 0; t < NT; ++t) fa[t] = _mm512_setzero_ps();
  for (int64_t j = 0; j < nb; ++j) {
    const uint8_t* blk = panel + static_cast<size_t>(j) * bb;
    // The panels stream from memory: fetch the block kPrefetchBlocks ahead (into the next panel
    // at the end of this one, which is usually this thread's next).
    for (size_t o = 0; o < bb; o += 64) _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchBlocks * bb + o), _MM_HINT_T0);
    const __m512 sv = f16x16(blk);
    __m512i w[8];
    expand_codes<T>(blk + 32, w);
    for (int t = 0; t < NT; ++t) {
      const __m512i dot = block_dot(w, a.q + (t0 + t) * a.kp + 32 * j, _mm512_set1_epi32(a.corr[(t0 + t) * a.nsp + j]));
      const __m512 dx = _mm512_set1_ps(a.dxs[(t0 + t) * a.nsp + j]);
      fa[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(sv, dx), fa[t]);
    }
  }
  for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + (t0 + t) * ldy, rmask, fa[t]);
}

// Q4_K: per super-block the rows' d and dmin, per block their 6-bit scale and min; the block's
// scales d*sc and mins -(dmin*mn) are the unpacked panels' own (same fp32 products), then the lane
// tile's steps for asymmetric types: fa += cvt(dot) * (s dx), fa += m X.
template <int NT>
void tile_q4_k(const uint8_t* panel, int64_t n_units, const Acts& a, int64_t t0, float* y, int64_t ldy, __mmask16 rmask) {
  constexpr size_t kBlock = 32 + 256;
  const size_t ub = panel_unit_bytes(TensorType::Q4_K);
  __m512 fa[NT];
  for (int t = 0; t < NT; ++t) fa[t] = _mm512_setzero_ps();
  for (int64_t u = 0; u < n_units; ++u) {
    const uint8_t* unit = panel + static_cast<size_t>(u) * ub;
    const __m512 d = f16x16(unit);
    const __m512 dmin = f16x16(unit + 32);
    for (int jj = 0; jj < 8; ++jj) {
      const uint8_t* blk = unit + 64 + jj * kBlock;
      for (size_t o = 0; o < kBlock; o += 64)
        _mm_prefetch(reinterpret_cast<const char*>(blk + 2 * ub + o), _MM_HINT_T0);
      const int64_t j = 8 * u + jj;
      __m512 sv, mv;
      q4_k_scales(d, dmin, blk, sv, mv);
      __m512i w[8];
      expand_codes<TensorType::Q4_0>(blk + 32, w);
      for (int t = 0; t < NT; ++t) {
        const __m512i dot = block_dot(w, a.q + (t0 + t) * a.kp + 32 * j, _mm512_setzero_si512());
        const __m512 dx = _mm512_set1_ps(a.dxs[(t0 + t) * a.nsp + j]);
        fa[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(sv, dx), fa[t]);
        fa[t] = _mm512_fmadd_ps(mv, _mm512_set1_ps(a.X[(t0 + t) * a.nsp + j]), fa[t]);
      }
    }
  }
  for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + (t0 + t) * ldy, rmask, fa[t]);
}

// Q6_K: a pair of sub-blocks' 8 chunks, the low 4 bits as Q4_0's codes and the top 2 bits moved
// to bits 4-5 (a 16-bit shift keeps each byte's own bits where the mask 0x30 looks).
inline void expand_codes_q6_k(const uint8_t* c8, __m512i (&w)[8]) {
  expand_codes<TensorType::Q4_0>(c8, w);
  const __m512i k30 = _mm512_set1_epi8(0x30);
  for (int v = 0; v < 2; ++v) {
    const __m512i h = _mm512_loadu_si512(c8 + 256 + 64 * v);
    w[4 * v] = _mm512_or_si512(w[4 * v], _mm512_and_si512(_mm512_slli_epi16(h, 4), k30));
    w[4 * v + 1] = _mm512_or_si512(w[4 * v + 1], _mm512_and_si512(_mm512_slli_epi16(h, 2), k30));
    w[4 * v + 2] = _mm512_or_si512(w[4 * v + 2], _mm512_and_si512(h, k30));
    w[4 * v + 3] = _mm512_or_si512(w[4 * v + 3], _mm512_and_si512(_mm512_srli_epi16(h, 2), k30));
  }
}

// Sub-block j's 16 scales d*sc (the unpacked panels' fp32 product).
inline __m512 q6_k_scales(__m512 d, const uint8_t* unit, int j) {
  const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(unit + 32 + 16 * j));
  return _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc)));
}

// Q6_K: sub-blocks of 16 columns, symmetric (offset 32, in corr): per sub-block the lane tile's
// steps for SB = 16, a single chain of 4 vpdpbusd from corr, then fa += cvt(dot) * (s dx).
template <int NT>
void tile_q6_k(const uint8_t* panel, int64_t n_units, const Acts& a, int64_t t0, float* y, int64_t ldy, __mmask16 rmask) {
  const size_t ub = panel_unit_bytes(TensorType::Q6_K);
  __m512 fa[NT];
  for (int t = 0; t < NT; ++t) fa[t] = _mm512_setzero_ps();
  for (int64_t u = 0; u < n_units; ++u) {
    const uint8_t* unit = panel + static_cast<size_t>(u) * ub;
    for (size_t o = 0; o < kQ6KPairsAt; o += 64) _mm_prefetch(reinterpret_cast<const char*>(unit + 2 * ub + o), _MM_HINT_T0);
    const __m512 d = f16x16(unit);
    for (int pr = 0; pr < 8; ++pr) {
      const uint8_t* c8 = unit + kQ6KPairsAt + pr * kQ6KPairBytes;
      for (size_t o = 0; o < kQ6KPairBytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(c8 + 2 * ub + o), _MM_HINT_T0);
      __m512i w[8];
      expand_codes_q6_k(c8, w);
      for (int half = 0; half < 2; ++half) {
        const int64_t j = 16 * u + 2 * pr + half;
        const __m512 sv = q6_k_scales(d, unit, static_cast<int>(2 * pr + half));
        for (int t = 0; t < NT; ++t) {
          const int8_t* q = a.q + (t0 + t) * a.kp + 16 * j;
          __m512i ia = _mm512_set1_epi32(a.corr[(t0 + t) * a.nsp + j]);
          for (int g = 0; g < 4; ++g) ia = _mm512_dpbusd_epi32(ia, w[4 * half + g], _mm512_set1_epi32(load_i32(q + 4 * g)));
          fa[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia), _mm512_mul_ps(sv, _mm512_set1_ps(a.dxs[(t0 + t) * a.nsp + j])), fa[t]);
        }
      }
    }
  }
  for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + (t0 + t) * ldy, rmask, fa[t]);
}

template <TensorType T, int NT>
void tile_of(const uint8_t* panel, int64_t units, const Acts& a, int64_t t0, float* y, int64_t ldy, __mmask16 rmask) {
  if constexpr (T == TensorType::Q4_K) tile_q4_k<NT>(panel, units, a, t0, y, ldy, rmask);
  else if constexpr (T == TensorType::Q6_K) tile_q6_k<NT>(panel, units, a, t0, y, ldy, rmask);
  else tile<T, NT>(panel, units, a, t0, y, ldy, rmask);
}

template <TensorType T>
void tile_n(int nt, const uint8_t* panel, int64_t units, const Acts& a, int64_t t0, float* y, int64_t ldy, __mmask16 rmask) {
  switch (nt) {
    case 8: return tile_of<T, 8>(panel, units, a, t0, y, ldy, rmask);
    case 7: return tile_of<T, 7>(panel, units, a, t0, y, ldy, rmask);
    case 6: return tile_of<T, 6>(panel, units, a, t0, y, ldy, rmask);
    case 5: return tile_of<T, 5>(panel, units, a, t0, y, ldy, rmask);
    case 4: return tile_of<T, 4>(panel, units, a, t0, y, ldy, rmask);
    case 3: return tile_of<T, 3>(panel, units, a, t0, y, ldy, rmask);
    case 2: return tile_of<T, 2>(panel, units, a, t0, y, ldy, rmask);
    default: return tile_of<T, 1>(panel, units, a, t0, y, ldy, rmask);
  }
}

// A panel as the unpacked panel path holds it: its codes' chunks of 4 columns in order (64 bytes
// each: block j of 32 at P + 512 j), the 16 scales of sub-block j (and Q4_K's mins) as fp32 at
// S + 16 j (M + 16 j). For prompts, where one expansion serves many token tiles.
template <TensorType T>
void expand_panel(const uint8_t* panel, int64_t units, uint8_t* P, float* S, float* M) {
  const size_t bb = panel_unit_bytes(T);
  if constexpr (T == TensorType::Q6_K) {
    for (int64_t u = 0; u < units; ++u) {
      const uint8_t* unit = panel + static_cast<size_t>(u) * bb;
      const __m512 d = f16x16(unit);
      for (int pr = 0; pr < 8; ++pr) {
        __m512i w[8];
        expand_codes_q6_k(unit + kQ6KPairsAt + pr * kQ6KPairBytes, w);
        for (int c = 0; c < 8; ++c) _mm512_store_si512(P + 512 * (8 * u + pr) + 64 * c, w[c]);
      }
      for (int j = 0; j < 16; ++j) _mm512_store_ps(S + 16 * (16 * u + j), q6_k_scales(d, unit, j));
    }
    return;
  }
  if constexpr (T == TensorType::Q4_K) {
    for (int64_t u = 0; u < units; ++u) {
      const uint8_t* unit = panel + static_cast<size_t>(u) * bb;
      const __m512 d = f16x16(unit);
      const __m512 dmin = f16x16(unit + 32);
      for (int jj = 0; jj < 8; ++jj) {
        const uint8_t* blk = unit + 64 + jj * (32 + 256);
        const int64_t j = 8 * u + jj;
        __m512i w[8];
        expand_codes<TensorType::Q4_0>(blk + 32, w);
        for (int c = 0; c < 8; ++c) _mm512_store_si512(P + 512 * j + 64 * c, w[c]);
        __m512 sv, mv;
        q4_k_scales(d, dmin, blk, sv, mv);
        _mm512_store_ps(S + 16 * j, sv);
        _mm512_store_ps(M + 16 * j, mv);
      }
    }
    return;
  }
  const int64_t nb = units;
  for (int64_t j = 0; j < nb; ++j) {
    const uint8_t* blk = panel + static_cast<size_t>(j) * bb;
    for (size_t o = 0; o < bb; o += 64) _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchBlocks * bb + o), _MM_HINT_T0);
    __m512i w[8];
    expand_codes<T>(blk + 32, w);
    for (int c = 0; c < 8; ++c) _mm512_store_si512(P + 512 * j + 64 * c, w[c]);
    _mm512_store_ps(S + 16 * j, f16x16(blk));
  }
}

inline void expand_panel_any(TensorType type, const uint8_t* panel, int64_t units, uint8_t* P, float* S, float* M) {
  switch (type) {
    case TensorType::Q4_0: return expand_panel<TensorType::Q4_0>(panel, units, P, S, M);
    case TensorType::Q5_0: return expand_panel<TensorType::Q5_0>(panel, units, P, S, M);
    case TensorType::Q4_K: return expand_panel<TensorType::Q4_K>(panel, units, P, S, M);
    case TensorType::Q6_K: return expand_panel<TensorType::Q6_K>(panel, units, P, S, M);
    default: return expand_panel<TensorType::Q8_0>(panel, units, P, S, M);
  }
}

inline void tile_any(TensorType type, int nt, const uint8_t* panel, int64_t nb, const Acts& a, int64_t t0, float* y,
                     int64_t ldy, __mmask16 rmask) {
  switch (type) {
    case TensorType::Q4_0: return tile_n<TensorType::Q4_0>(nt, panel, nb, a, t0, y, ldy, rmask);
    case TensorType::Q5_0: return tile_n<TensorType::Q5_0>(nt, panel, nb, a, t0, y, ldy, rmask);
    case TensorType::Q4_K: return tile_n<TensorType::Q4_K>(nt, panel, nb, a, t0, y, ldy, rmask);
    case TensorType::Q6_K: return tile_n<TensorType::Q6_K>(nt, panel, nb, a, t0, y, ldy, rmask);
    default: return tile_n<TensorType::Q8_0>(nt, panel, nb, a, t0, y, ldy, rmask);
  }
}

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT::detail::panels
