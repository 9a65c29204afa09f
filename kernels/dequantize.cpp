#include "kernels/gcc_intrinsics_warnings.h"  // first: before any intrinsics header
#include "kernels/dequantize.h"

#include <cstring>

#include "kernels/fp16.h"
#include "kernels/quant_blocks.h"

// Bit-exactness with gguf-py (gguf.quants.dequantize) needs the same float32 operations in the
// same order: e.g. Q4_1 is round(round(d*q) + m), never fma(d, q, m); K-quants first round the
// sub-block scale d*sc, then multiply. Scalar code goes through no_fma(); vector code uses the
// explicitly rounded intrinsics (_mm512_mul_round_ps etc.), which the compiler never contracts.

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {
namespace detail {
namespace {

void check_n(TensorType type, int64_t n, const char* what) {
  auto layout = block_layout(type);
  if (layout.elems == 0) throw_unsupported(type, what);
  if (n < 0 || n % layout.elems != 0)
    throw Error(std::string(what) + ": " + std::to_string(n) + " elements is not a multiple of the " +
                type_label(type) + " block size " + std::to_string(layout.elems));
}

void scalar_q4_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 18, y += 32) {
    const float d = load_f16(b);
    for (int l = 0; l < 16; ++l) {
      y[l] = d * static_cast<float>((b[2 + l] & 15) - 8);
      y[l + 16] = d * static_cast<float>((b[2 + l] >> 4) - 8);
    }
  }
}
void scalar_q4_1(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 20, y += 32) {
    const float d = load_f16(b), m = load_f16(b + 2);
    for (int l = 0; l < 16; ++l) {
      y[l] = no_fma(d * static_cast<float>(b[4 + l] & 15)) + m;
      y[l + 16] = no_fma(d * static_cast<float>(b[4 + l] >> 4)) + m;
    }
  }
}
void scalar_q5_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 22, y += 32) {
    const float d = load_f16(b);
    const uint32_t qh = load_u32(b + 2);
    for (int l = 0; l < 16; ++l) {
      int q0 = (b[6 + l] & 15) | static_cast<int>(((qh >> l) & 1) << 4);
      int q1 = (b[6 + l] >> 4) | static_cast<int>(((qh >> (l + 16)) & 1) << 4);
      y[l] = d * static_cast<float>(q0 - 16);
      y[l + 16] = d * static_cast<float>(q1 - 16);
    }
  }
}
void scalar_q5_1(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 24, y += 32) {
    const float d = load_f16(b), m = load_f16(b + 2);
    const uint32_t qh = load_u32(b + 4);
    for (int l = 0; l < 16; ++l) {
      int q0 = (b[8 + l] & 15) | static_cast<int>(((qh >> l) & 1) << 4);
      int q1 = (b[8 + l] >> 4) | static_cast<int>(((qh >> (l + 16)) & 1) << 4);
      y[l] = no_fma(d * static_cast<float>(q0)) + m;
      y[l + 16] = no_fma(d * static_cast<float>(q1)) + m;
    }
  }
}
void scalar_q8_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 34, y += 32) {
    const float d = load_f16(b);
    for (int l = 0; l < 32; ++l) y[l] = d * static_cast<float>(static_cast<int8_t>(b[2 + l]));
  }
}
// Q4_K and Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins; Q5_K adds a fifth bit (qh).
template <bool Q5>
void scalar_q4_q5_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += Q5 ? 176 : 144, y += 256) {
    const float d = load_f16(b), dmin = load_f16(b + 2);
    const uint8_t* sc = b + 4;
    const uint8_t* qh = b + 16;  // Q5_K only
    const uint8_t* qs = b + (Q5 ? 48 : 16);
    for (int j = 0; j < 8; ++j) {
      int s, m;
      k_scale_min(sc, j, s, m);
      const float ds = d * static_cast<float>(s), dm = dmin * static_cast<float>(m);
      const uint8_t* q = qs + 32 * (j / 2);
      const int shift = 4 * (j & 1);
      for (int l = 0; l < 32; ++l) {
        int v = (q[l] >> shift) & 15;
        if constexpr (Q5) v |= ((qh[l] >> j) & 1) << 4;
        y[32 * j + l] = no_fma(ds * static_cast<float>(v)) - dm;
      }
    }
  }
}
void scalar_q6_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 210, y += 256) {
    const float d = load_f16(b + 208);
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    for (int e = 0; e < 256; ++e) {
      const float ds = d * static_cast<float>(sc[e / 16]);
      y[e] = ds * static_cast<float>(q6k_value(b, e) - 32);
    }
  }
}

#if defined(KVSQ_AVX512)
constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

inline __m512 mul_r(__m512 a, __m512 b) { return _mm512_mul_round_ps(a, b, kRound); }
inline __m512 add_r(__m512 a, __m512 b) { return _mm512_add_round_ps(a, b, kRound); }
inline __m512 sub_r(__m512 a, __m512 b) { return _mm512_sub_round_ps(a, b, kRound); }

// 16 bytes -> low nibbles (16 x i32) and high nibbles (16 x i32).
inline void nibbles16(const uint8_t* p, __m512i& lo, __m512i& hi) {
  const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  lo = _mm512_and_si512(v, _mm512_set1_epi32(15));
  hi = _mm512_srli_epi32(v, 4);
}

void avx_q4_0(const uint8_t* b, float* y, int64_t nb) {
  const __m512i k8 = _mm512_set1_epi32(8);
  for (int64_t i = 0; i < nb; ++i, b += 18, y += 32) {
    const __m512 d = _mm512_set1_ps(load_f16(b));
    __m512i lo, hi;
    nibbles16(b + 2, lo, hi);
    _mm512_storeu_ps(y, mul_r(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(lo, k8))));
    _mm512_storeu_ps(y + 16, mul_r(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(hi, k8))));
  }
}
void avx_q4_1(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 20, y += 32) {
    const __m512 d = _mm512_set1_ps(load_f16(b)), m = _mm512_set1_ps(load_f16(b + 2));
    __m512i lo, hi;
    nibbles16(b + 4, lo, hi);
    _mm512_storeu_ps(y, add_r(mul_r(d, _mm512_cvtepi32_ps(lo)), m));
    _mm512_storeu_ps(y + 16, add_r(mul_r(d, _mm512_cvtepi32_ps(hi)), m));
  }
}
void avx_q5_0(const uint8_t* b, float* y, int64_t nb) {
  const __m512i k16 = _mm512_set1_epi32(16);
  for (int64_t i = 0; i < nb; ++i, b += 22, y += 32) {
    const __m512 d = _mm512_set1_ps(load_f16(b));
    const uint32_t qh = load_u32(b + 2);
    __m512i lo, hi;
    nibbles16(b + 6, lo, hi);
    lo = _mm512_mask_or_epi32(lo, static_cast<__mmask16>(qh & 0xffff), lo, k16);
    hi = _mm512_mask_or_epi32(hi, static_cast<__mmask16>(qh >> 16), hi, k16);
    _mm512_storeu_ps(y, mul_r(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(lo, k16))));
    _mm512_storeu_ps(y + 16, mul_r(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(hi, k16))));
  }
}
void avx_q5_1(const uint8_t* b, float* y, int64_t nb) {
  const __m512i k16 = _mm512_set1_epi32(16);
  for (int64_t i = 0; i < nb; ++i, b += 24, y += 32) {
    const __m512 d = _mm512_set1_ps(load_f16(b)), m = _mm512_set1_ps(load_f16(b + 2));
    const uint32_t qh = load_u32(b + 4);
    __m512i lo, hi;
    nibbles16(b + 8, lo, hi);
    lo = _mm512_mask_or_epi32(lo, static_cast<__mmask16>(qh & 0xffff), lo, k16);
    hi = _mm512_mask_or_epi32(hi, static_cast<__mmask16>(qh >> 16), hi, k16);
    _mm512_storeu_ps(y, add_r(mul_r(d, _mm512_cvtepi32_ps(lo)), m));
    _mm512_storeu_ps(y + 16, add_r(mul_r(d, _mm512_cvtepi32_ps(hi)), m));
  }
}
void avx_q8_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 34, y += 32) {
    const __m512 d = _mm512_set1_ps(load_f16(b));
    const __m512i q0 = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2)));
    const __m512i q1 = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 18)));
    _mm512_storeu_ps(y, mul_r(d, _mm512_cvtepi32_ps(q0)));
    _mm512_storeu_ps(y + 16, mul_r(d, _mm512_cvtepi32_ps(q1)));
  }
}
// Q4_K / Q5_K share everything but the fifth bit.
template <bool Q5>
void avx_qk45(const uint8_t* b, float* y, int64_t nb) {
  constexpr size_t kBytes = Q5 ? 176 : 144;
  for (int64_t i = 0; i < nb; ++i, b += kBytes, y += 256) {
    const float d = load_f16(b), dmin = load_f16(b + 2);
    const uint8_t* sc = b + 4;
    const uint8_t* qh = b + 16;
    const uint8_t* qs = b + (Q5 ? 48 : 16);
    const __m512i qh0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qh)));
    const __m512i qh1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qh + 16)));
    for (int j = 0; j < 8; ++j) {
      int s, m;
      k_scale_min(sc, j, s, m);
      const __m512 ds = _mm512_set1_ps(d * static_cast<float>(s));
      const __m512 dm = _mm512_set1_ps(dmin * static_cast<float>(m));
      const uint8_t* q = qs + 32 * (j / 2);
      for (int h = 0; h < 2; ++h) {
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * h)));
        v = _mm512_and_si512(_mm512_srli_epi32(v, 4 * (j & 1)), _mm512_set1_epi32(15));
        if constexpr (Q5) {
          const __m512i hb = _mm512_and_si512(_mm512_srli_epi32(h ? qh1 : qh0, j), _mm512_set1_epi32(1));
          v = _mm512_or_si512(v, _mm512_slli_epi32(hb, 4));
        }
        _mm512_storeu_ps(y + 32 * j + 16 * h, sub_r(mul_r(ds, _mm512_cvtepi32_ps(v)), dm));
      }
    }
  }
}
void avx_q6_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 210, y += 256) {
    const float d = load_f16(b + 208);
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b + 64 * h;
      const uint8_t* qh = b + 128 + 32 * h;
      for (int c4 = 0; c4 < 4; ++c4) {
        for (int half = 0; half < 2; ++half) {
          const int l0 = 16 * half;
          __m512i lo = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ql + (c4 & 1) * 32 + l0)));
          lo = _mm512_and_si512(_mm512_srli_epi32(lo, 4 * (c4 >> 1)), _mm512_set1_epi32(15));
          __m512i hi = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qh + l0)));
          hi = _mm512_and_si512(_mm512_srli_epi32(hi, 2 * c4), _mm512_set1_epi32(3));
          const __m512i q = _mm512_sub_epi32(_mm512_or_si512(lo, _mm512_slli_epi32(hi, 4)), _mm512_set1_epi32(32));
          const int e = 128 * h + 32 * c4 + l0;
          const __m512 ds = _mm512_set1_ps(d * static_cast<float>(sc[e / 16]));
          _mm512_storeu_ps(y + e, mul_r(ds, _mm512_cvtepi32_ps(q)));
        }
      }
    }
  }
}
void avx_f16(const uint8_t* b, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(y + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2 * i))));
  for (; i < n; ++i) y[i] = load_f16(b + 2 * i);
}
void avx_bf16(const uint8_t* b, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2 * i)));
    _mm512_storeu_ps(y + i, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
  }
  for (; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, b + 2 * i, 2);
    y[i] = bf16_to_fp32(h);
  }
}
#endif  // KVSQ_AVX512

}  // namespace

void dequantize_row_scalar(TensorType type, const void* src, float* dst, int64_t n) {
  check_n(type, n, "dequantize_row");
  const auto* b = static_cast<const uint8_t*>(src);
  switch (type) {
    case TensorType::F32: std::memcpy(dst, b, static_cast<size_t>(n) * 4); return;
    case TensorType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = load_f16(b + 2 * i);
      return;
    case TensorType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, b + 2 * i, 2);
        dst[i] = bf16_to_fp32(h);
      }
      return;
    case TensorType::Q4_0: scalar_q4_0(b, dst, n / 32); return;
    case TensorType::Q4_1: scalar_q4_1(b, dst, n / 32); return;
    case TensorType::Q5_0: scalar_q5_0(b, dst, n / 32); return;
    case TensorType::Q5_1: scalar_q5_1(b, dst, n / 32); return;
    case TensorType::Q8_0: scalar_q8_0(b, dst, n / 32); return;
    case TensorType::Q4_K: scalar_q4_q5_k<false>(b, dst, n / 256); return;
    case TensorType::Q5_K: scalar_q4_q5_k<true>(b, dst, n / 256); return;
    case TensorType::Q6_K: scalar_q6_k(b, dst, n / 256); return;
    default: throw_unsupported(type, "dequantize_row");
  }
}

}  // namespace detail

#if !defined(KVSQ_AVX512) && defined(__AVX2__)
namespace detail {
// AVX2 copies of the KV cache's block types (attention dequantizes cached rows a tile at a
// time): the scalar products exactly, eight at a time.
void avx2_q8_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 34, y += 32) {
    const __m256 d = _mm256_set1_ps(load_f16(b));
    for (int l = 0; l < 32; l += 8) {
      const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + l)));
      _mm256_storeu_ps(y + l, _mm256_mul_ps(d, _mm256_cvtepi32_ps(q)));
    }
  }
}
void avx2_q4_0(const uint8_t* b, float* y, int64_t nb) {
  const __m256i k8 = _mm256_set1_epi32(8), low = _mm256_set1_epi32(15);
  for (int64_t i = 0; i < nb; ++i, b += 18, y += 32) {
    const __m256 d = _mm256_set1_ps(load_f16(b));
    for (int l = 0; l < 16; l += 8) {
      const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + l)));
      const __m256i lo = _mm256_sub_epi32(_mm256_and_si256(bytes, low), k8);
      const __m256i hi = _mm256_sub_epi32(_mm256_srli_epi32(bytes, 4), k8);
      _mm256_storeu_ps(y + l, _mm256_mul_ps(d, _mm256_cvtepi32_ps(lo)));
      _mm256_storeu_ps(y + l + 16, _mm256_mul_ps(d, _mm256_cvtepi32_ps(hi)));
    }
  }
}
}  // namespace detail
#endif

void dequantize_row(TensorType type, const void* src, float* dst, int64_t n) {
#if !defined(KVSQ_AVX512) && defined(__AVX2__)
  if (type == TensorType::Q8_0 || type == TensorType::Q4_0) {
    detail::check_n(type, n, "dequantize_row");
    const auto* b = static_cast<const uint8_t*>(src);
    if (type == TensorType::Q8_0) detail::avx2_q8_0(b, dst, n / 32);
    else detail::avx2_q4_0(b, dst, n / 32);
    return;
  }
#endif
#if defined(KVSQ_AVX512)
  using namespace detail;
  check_n(type, n, "dequantize_row");
  const auto* b = static_cast<const uint8_t*>(src);
  switch (type) {
    case TensorType::F32: std::memcpy(dst, b, static_cast<size_t>(n) * 4); return;
    case TensorType::F16: avx_f16(b, dst, n); return;
    case TensorType::BF16: avx_bf16(b, dst, n); return;
    case TensorType::Q4_0: avx_q4_0(b, dst, n / 32); return;
    case TensorType::Q4_1: avx_q4_1(b, dst, n / 32); return;
    case TensorType::Q5_0: avx_q5_0(b, dst, n / 32); return;
    case TensorType::Q5_1: avx_q5_1(b, dst, n / 32); return;
    case TensorType::Q8_0: avx_q8_0(b, dst, n / 32); return;
    case TensorType::Q4_K: avx_qk45<false>(b, dst, n / 256); return;
    case TensorType::Q5_K: avx_qk45<true>(b, dst, n / 256); return;
    case TensorType::Q6_K: avx_q6_k(b, dst, n / 256); return;
    default: throw_unsupported(type, "dequantize_row");
  }
#else
  detail::dequantize_row_scalar(type, src, dst, n);
#endif
}

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
