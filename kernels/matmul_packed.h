#pragma once
// Row-dot kernels over weights packed at load time (layout: kernels/weight_packing.h), included in
// kernels/matmul.cpp's AVX-512 VNNI variants. Against GGUF's layout, where one 512-bit vpdpbusd
// covers two blocks and every 64 codes need their own int->float conversion and scale FMA, a
// packed group puts 16 blocks in the 16 lanes: the 8 chunks of a group accumulate in one integer
// register per row and token, and the float work (convert, scale, FMA) is done once per group of
// 512 codes. Decoding a chunk of packed codes is one masked load (plus shift/AND for nibbles and a
// masked OR for Q5_0's fifth bit) instead of GGUF's shuffles. Both matter most when several tokens
// share the weights (a server's decode step); for one token they leave decode waiting on memory only.
//
// Arithmetic: each block's integer dot product is exact (as in the portable reference), then
// scaled by s_w * s_x per block and summed in fp32 lane by lane, lanes reduced at the end. A token's
// result does not depend on the other tokens of the call (groups of up to 4 tokens, same operations
// per token), so a batched decode step gives every sequence the logits it gets alone. From 8 tokens
// the panels serve the call (unpack_row gives them the GGUF rows' own codes and scales).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/variant.h"
#include "kernels/vec_math.h"
#include "kernels/weight_packing.h"
#include "kvsqueeze/tensor_type.h"

namespace kvsqueeze::kernels::inline KVSQ_VARIANT::detail::packed {

constexpr int64_t kGroup = kPackedGroupBlocks;  // blocks per group (kernels/weight_packing.h)
constexpr int64_t group_count(int64_t nb) { return (nb + kGroup - 1) / kGroup; }
constexpr int64_t interleaved_bytes(int64_t nb) { return group_count(nb) * 512; }  // one token's codes

template <TensorType T>
constexpr int64_t block_bytes() { return T == TensorType::Q8_0 ? 34 : T == TensorType::Q5_0 ? 22 : 18; }
template <TensorType T>
constexpr int64_t codes_offset(int64_t n) { return (T == TensorType::Q5_0 ? 6 : 2) * n; }

// A token's int8 codes in natural order (q, nb blocks of 32, zero padded to a multiple of 64) ->
// the packed order: group g, chunk c, lane l = elements 4c..4c+3 of block 16g + l.
inline void interleave_token(const int8_t* q, int64_t nb, int8_t* qi) {
  const __m512i lane8 = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(8));
  for (int64_t g = 0; g < group_count(nb); ++g) {
    const int64_t n = std::min(kGroup, nb - kGroup * g);
    const __mmask16 lanes = static_cast<__mmask16>((1u << n) - 1);
    const int8_t* base = q + 512 * g;
    for (int c = 0; c < 8; ++c) {
      const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), lanes, _mm512_add_epi32(lane8, _mm512_set1_epi32(c)), base, 4);
      _mm512_storeu_si512(qi + 512 * g + 64 * c, v);
    }
  }
}

// Chunks c and c + 4 of a group's row (n blocks): unsigned codes, lanes >= n zero.
template <TensorType T>
inline void chunk_pair(const uint8_t* grp, int64_t n, __mmask16 lanes, int c, __m512i& lo, __m512i& hi) {
  const uint8_t* codes = grp + codes_offset<T>(n);
  if constexpr (T == TensorType::Q8_0) {
    lo = _mm512_maskz_loadu_epi32(lanes, codes + c * 4 * n);
    hi = _mm512_maskz_loadu_epi32(lanes, codes + (c + 4) * 4 * n);
  } else {
    const __m512i v = _mm512_maskz_loadu_epi32(lanes, codes + c * 4 * n);
    const __m512i k15 = _mm512_set1_epi8(15);
    lo = _mm512_and_si512(v, k15);
    hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), k15);
    if constexpr (T == TensorType::Q5_0) {
      const uint64_t keep = n == 16 ? ~0ull : (1ull << (4 * n)) - 1;
      auto bits = [&](int cc) {
        const int64_t bit = cc * 4 * n;
        uint64_t v64;
        std::memcpy(&v64, grp + 2 * n + bit / 8, 8);  // stays inside the row: the codes follow
        return _cvtu64_mask64((v64 >> (bit % 8)) & keep);
      };
      const __m512i k16 = _mm512_set1_epi8(16);
      lo = _mm512_mask_add_epi8(lo, bits(c), lo, k16);
      hi = _mm512_mask_add_epi8(hi, bits(c + 4), hi, k16);
    }
  }
}

// Token activations for the packed kernels: interleaved codes (qi_stride bytes per token) and,
// per block (nsp per token, padding zero), the activation scale and the offset correction.
struct Acts {
  const int8_t* qi;
  int64_t qi_stride;
  const float* dxs;
  const int32_t* corr;
  int64_t nsp;
};

// 4 packed rows (row0 + i * row_bytes) against NT (1-4) tokens from t0: y[(t0 + t) * ldy + i].
// `next` is prefetched alongside (the rows this thread reads a few iterations later).
template <TensorType T, int NT>
void dot_rows4(const uint8_t* row0, size_t row_bytes, int64_t nb, const Acts& a, int64_t t0, float* y, int64_t ldy,
               const uint8_t* next) {
  constexpr int64_t bb = block_bytes<T>();
  __m512 acc[NT][4];
  for (int t = 0; t < NT; ++t)
    for (int r = 0; r < 4; ++r) acc[t][r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < group_count(nb); ++g) {
    const int64_t n = std::min(kGroup, nb - kGroup * g);
    const __mmask16 lanes = static_cast<__mmask16>((1u << n) - 1);
    const size_t off = static_cast<size_t>(kGroup * g * bb), len = static_cast<size_t>(n * bb);
    __m512i isum[NT][4];
    for (int t = 0; t < NT; ++t) {
      const __m512i init = _mm512_loadu_si512(a.corr + (t0 + t) * a.nsp + kGroup * g);
      for (int r = 0; r < 4; ++r) isum[t][r] = init;
    }
    for (int c = 0; c < 4; ++c) {
      // A quarter of the group's bytes of the rows kDecodePrefetchRows ahead, spread over the chunks.
      for (int r = 0; r < 4; ++r)
        for (size_t p = len * c / 4 / 64 * 64; p < len * (c + 1) / 4; p += 64)
          _mm_prefetch(reinterpret_cast<const char*>(next + r * row_bytes + off + p), _MM_HINT_T0);
      __m512i xlo[NT], xhi[NT];
      for (int t = 0; t < NT; ++t) {
        const int8_t* xq = a.qi + (t0 + t) * a.qi_stride + 512 * g;
        xlo[t] = _mm512_loadu_si512(xq + 64 * c);
        xhi[t] = _mm512_loadu_si512(xq + 64 * (c + 4));
      }
      for (int r = 0; r < 4; ++r) {
        __m512i lo, hi;
        chunk_pair<T>(row0 + r * row_bytes + off, n, lanes, c, lo, hi);
        for (int t = 0; t < NT; ++t) {
          isum[t][r] = _mm512_dpbusd_epi32(isum[t][r], lo, xlo[t]);
          isum[t][r] = _mm512_dpbusd_epi32(isum[t][r], hi, xhi[t]);
        }
      }
    }
    for (int r = 0; r < 4; ++r) {
      const __m512 sw = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lanes, row0 + r * row_bytes + off));
      for (int t = 0; t < NT; ++t) {
        const __m512 sx = _mm512_loadu_ps(a.dxs + (t0 + t) * a.nsp + kGroup * g);
        acc[t][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t][r]), _mm512_mul_ps(sw, sx), acc[t][r]);
      }
    }
  }
  for (int t = 0; t < NT; ++t) _mm_storeu_ps(y + (t0 + t) * ldy, reduce4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]));
}

// One packed row in the unpacked form of the panel path: natural-order codes u[cols] and block
// scales s[cols / 32] (m unused: these types are symmetric). Per group, the 8 chunk vectors
// (lane l = 4 codes of block l) are transposed into 8 vectors of two whole blocks each.
template <TensorType T>
void unpack_row(const uint8_t* row, int64_t cols, uint8_t* u, float* s, float*) {
  constexpr int64_t bb = block_bytes<T>();
  const int64_t nb = cols / 32;
  for (int64_t g = 0; g < group_count(nb); ++g) {
    const int64_t n = std::min(kGroup, nb - kGroup * g);
    const __mmask16 lanes = static_cast<__mmask16>((1u << n) - 1);
    const uint8_t* grp = row + kGroup * g * bb;
    __m512i c[8];
    for (int p = 0; p < 4; ++p) chunk_pair<T>(grp, n, lanes, p, c[p], c[p + 4]);
    // a[i]: dword pairs (chunk 2i, chunk 2i+1) of blocks l (unpacklo: l = 0,1 of each 128-bit lane; hi: 2,3).
    __m512i lo2[4], hi2[4];
    for (int i = 0; i < 4; ++i) {
      lo2[i] = _mm512_unpacklo_epi32(c[2 * i], c[2 * i + 1]);
      hi2[i] = _mm512_unpackhi_epi32(c[2 * i], c[2 * i + 1]);
    }
    // v[b][h]: chunks 4h..4h+3 of the blocks b, b+4, b+8, b+12 (one per 128-bit lane), b = 0..3.
    __m512i v[4][2];
    for (int h = 0; h < 2; ++h) {
      v[0][h] = _mm512_unpacklo_epi64(lo2[2 * h], lo2[2 * h + 1]);
      v[1][h] = _mm512_unpackhi_epi64(lo2[2 * h], lo2[2 * h + 1]);
      v[2][h] = _mm512_unpacklo_epi64(hi2[2 * h], hi2[2 * h + 1]);
      v[3][h] = _mm512_unpackhi_epi64(hi2[2 * h], hi2[2 * h + 1]);
    }
    // x = shuffle(v[b][0], v[b][1], (2,0,2,0)) = [b lo, b+8 lo, b hi, b+8 hi];
    // y = shuffle(v[b][0], v[b][1], (3,1,3,1)) = [b+4 lo, b+12 lo, b+4 hi, b+12 hi].
    __m512i x[4], y[4];
    for (int b = 0; b < 4; ++b) {
      x[b] = _mm512_shuffle_i32x4(v[b][0], v[b][1], _MM_SHUFFLE(2, 0, 2, 0));
      y[b] = _mm512_shuffle_i32x4(v[b][0], v[b][1], _MM_SHUFFLE(3, 1, 3, 1));
    }
    // Two whole blocks per vector: (b, b+1) from x[b], x[b+1] lanes 0 and 2, (b+8, b+9) lanes 1 and 3.
    __m512i out[8];
    for (int b = 0; b < 4; b += 2) {
      out[b / 2] = _mm512_shuffle_i32x4(x[b], x[b + 1], _MM_SHUFFLE(2, 0, 2, 0));      // blocks b, b+1
      out[4 + b / 2] = _mm512_shuffle_i32x4(x[b], x[b + 1], _MM_SHUFFLE(3, 1, 3, 1));  // b+8, b+9
      out[2 + b / 2] = _mm512_shuffle_i32x4(y[b], y[b + 1], _MM_SHUFFLE(2, 0, 2, 0));  // b+4, b+5
      out[6 + b / 2] = _mm512_shuffle_i32x4(y[b], y[b + 1], _MM_SHUFFLE(3, 1, 3, 1));  // b+12, b+13
    }
    uint8_t* ug = u + 512 * g;
    for (int64_t k = 0; 2 * k < n; ++k) {
      if (2 * k + 1 < n) _mm512_storeu_si512(ug + 64 * k, out[k]);
      else _mm256_storeu_si256(reinterpret_cast<__m256i*>(ug + 64 * k), _mm512_castsi512_si256(out[k]));
    }
    _mm512_mask_storeu_ps(s + kGroup * g, lanes, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lanes, grp)));
  }
}

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT::detail::packed
