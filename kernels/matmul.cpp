// Matrix products y = x * W^T against GGUF weight matrices.
//
// Quantized weights (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K) use integer dot products:
//   * Activations are quantized once per call, per token, in blocks of 32 to int8 with a float
//     scale dx = amax/127 (round to nearest) -- the same precision as llama.cpp's Q8_0.
//   * Every weight type is "unpacked" to one common form: per sub-block j of SB elements
//     (SB = 32, or 16 for Q6_K), unsigned 8-bit codes u (0..255), a float scale s_j and either a
//     fixed integer offset (w = s_j * (u - off), "symmetric") or a float bias (w = s_j*u + m_j).
//     So  dot(w, x) = sum_j s_j * dx_j * (sum_i u_i q_i - off * sum_i q_i) [+ m_j * dx_j * sum_i q_i],
//     where sum u*q is an unsigned-by-signed byte dot product (AVX-512 VNNI vpdpbusd) and the
//     activation block sums come from the activation quantization. The offset correction is
//     exact integer arithmetic.
//   * Row-dot path (1-7 tokens: decode and a server's decode steps): rows are unpacked into an
//     L1-resident buffer and dotted with each token, 2 sub-blocks per 512-bit vpdpbusd, the scale
//     applied per sub-block in fp32. 4 rows go together, for up to 3 tokens at a time (shared
//     activation loads, one horizontal reduction per token for the 4), so each token's result is
//     the same whatever the other tokens; Q4_0/Q5_0/Q8_0 rows are read in place, without the
//     buffer, and the rows 12 ahead are prefetched (decode waits on memory, not on arithmetic).
//   * Panel path (8+ tokens): panels of 16 rows are unpacked and transposed so that
//     one 512-bit vector holds 4 consecutive codes of 16 rows; one vpdpbusd against a broadcast
//     4-byte group of a token then advances 16 row-dots at once, and the fp32 scale work is
//     amortized over a whole sub-block (8 vpdpbusd per cvt+mul+fma instead of 1). A tile is
//     16 rows x 8 tokens in registers; groups of 4 panels reuse each token tile from L1.
//   * AMX (the `amx` variant, 16+ tokens): the same panels, but one tile instruction makes the
//     integer dots of 16 tokens x 16 rows over a sub-block; AVX-512 scales them in the same order,
//     so the results equal the VNNI panels' bit for bit (kernels/matmul_amx.h).
// Float weights (F32 F16 BF16) use fp32 FMA with fp32 activations: row dots (4 rows at a time for
// one token) below 8 tokens, else the same 16-row transposed panels in fp32 with a 16x12 register
// tile (an sgemm microkernel). BF16 could go twice as fast through vdpbf16ps with activations
// rounded to bf16 (what llama.cpp does), but that costs ~5e-3 relative on the logits and fails
// the project's float-weight reference tolerance (2e-3); a hi+lo bf16 split of the activations
// keeps the accuracy but is no faster than fp32 FMA, so BF16 stays on the fp32 path.
// (OpenBLAS 0.3.21 as packaged here runs its Haswell AVX2 sgemm on this CPU, ~60 GFLOPS/core,
// below what these kernels reach, so it is not used.)
//
// Threads: one OpenMP parallel region per call (omp_get_max_threads(), 1 for tiny products);
// tokens are split among threads for the activation quantization, then contiguous chunks of
// rows (row-dot path) or groups of panels (panel path) are handed out dynamically.

#include "kernels/gcc_intrinsics_warnings.h"  // first: before any intrinsics header
#include "kernels/matmul.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/dequantize.h"
#include "kernels/quant_blocks.h"
#include "kernels/transpose16.h"
#include "kernels/vec_math.h"
#include "kernels/weight_packing.h"

// The `amx` variant: AMX int8 tiles for the quantized panel path (kernels/matmul_amx.h). GCC
// spells the feature macros __AMX_TILE__/__AMX_INT8__, clang __AMXTILE__/__AMXINT8__.
#if defined(KVSQ_AVX512VNNI) && (defined(__AMX_TILE__) || defined(__AMXTILE__)) && \
    (defined(__AMX_INT8__) || defined(__AMXINT8__))
#define KVSQ_AMX 1
#include "kernels/matmul_amx.h"
#elif defined(KVSQ_VARIANT_IS_amx)
#error "the amx kernel variant is compiled without AMX-TILE/AMX-INT8 (compiler flags or feature macros)"
#endif

#if defined(KVSQ_AVX512VNNI)
#include "kernels/matmul_packed.h"  // rows packed at load time (kernels/weight_packing.h)
#include "kernels/matmul_panels.h"  // panels packed at load time (kernels/panel_packing.h)
#endif

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {
namespace detail {
namespace {

constexpr int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// ---------------------------------------------------------------------------------------------
// Scratch memory: 64-byte aligned, grown on demand, one set per thread.
struct Scratch {
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> mem;
  size_t cap = 0;
  void* get(size_t bytes) {
    if (bytes > cap) {
      size_t n = static_cast<size_t>(round_up(static_cast<int64_t>(std::max<size_t>(bytes, 4096)), 64));
      mem.reset(static_cast<uint8_t*>(std::aligned_alloc(64, n)));
      if (!mem) throw Error("matmul: out of memory for " + std::to_string(n) + " bytes of scratch");
      cap = n;
    }
    return mem.get();
  }
};
// Carves several arrays out of one Scratch.
struct Carver {
  uint8_t* base;
  size_t off = 0;
  template <class T>
  T* take(int64_t count) {
    T* p = reinterpret_cast<T*>(base + off);
    off += static_cast<size_t>(round_up(static_cast<int64_t>(sizeof(T)) * count, 64));
    return p;
  }
};
template <class T>
constexpr size_t bytes_of(int64_t count) {
  return static_cast<size_t>(round_up(static_cast<int64_t>(sizeof(T)) * count, 64));
}

thread_local Scratch tl_act;   // activations (caller thread)
thread_local Scratch tl_work;  // per-thread unpack / panel buffers

// Decode streams the weights once per token; the hardware prefetchers alone leave the cores
// waiting on memory (measured: software prefetch this far ahead makes 1-token decode ~15% faster
// on 2 threads). The row-dot paths read rows in order (4 at a time for one token): each fetches
// the row kDecodePrefetchRows ahead of the one it reads.
constexpr int64_t kDecodePrefetchRows = 12;
// The panel path unpacks a row at a time; 12 rows ahead (measured on Qwen 0.5B's step of 8
// sequences: 4 ahead 22.2 ms, 12 ahead 20.4-22.0, 24 ahead 20.3; none 29.8).
constexpr int64_t kPanelPrefetchRows = 12;
inline void prefetch_bytes(const uint8_t* p, size_t n) {
  for (size_t o = 0; o < n; o += 64) __builtin_prefetch(p + o, 0, 3);
}

// ---------------------------------------------------------------------------------------------
// Unpacking weights to (u, s, m). All unpackers write cols codes to u, cols/sb scales to s and,
// for asymmetric types, cols/sb biases to m.
struct QuantKind {
  int sb;     // sub-block size
  int off;    // symmetric offset (0 for the asymmetric types)
  bool asym;  // per-sub-block bias m_j
};

bool quant_kind(TensorType t, QuantKind& k) {
  switch (t) {
    case TensorType::Q4_0: k = {32, 8, false}; return true;
    case TensorType::Q5_0: k = {32, 16, false}; return true;
    case TensorType::Q8_0: k = {32, 128, false}; return true;
    case TensorType::Q4_1: k = {32, 0, true}; return true;
    case TensorType::Q5_1: k = {32, 0, true}; return true;
    case TensorType::Q4_K: k = {32, 0, true}; return true;
    case TensorType::Q5_K: k = {32, 0, true}; return true;
    case TensorType::Q6_K: k = {16, 32, false}; return true;
    default: return false;
  }
}

void unpack_scalar(TensorType t, const uint8_t* b, int64_t cols, uint8_t* u, float* s, float* m) {
  switch (t) {
    case TensorType::Q4_0:
    case TensorType::Q4_1:
    case TensorType::Q5_0:
    case TensorType::Q5_1: {
      const bool has_m = t == TensorType::Q4_1 || t == TensorType::Q5_1;
      const bool has_h = t == TensorType::Q5_0 || t == TensorType::Q5_1;
      const size_t bytes = block_layout(t).bytes;
      for (int64_t i = 0; i < cols / 32; ++i, b += bytes, u += 32) {
        s[i] = load_f16(b);
        size_t o = 2;
        if (has_m) m[i] = load_f16(b + 2), o = 4;
        uint32_t qh = 0;
        if (has_h) qh = load_u32(b + o), o += 4;
        for (int l = 0; l < 16; ++l) {
          u[l] = static_cast<uint8_t>((b[o + l] & 15) | (((qh >> l) & 1) << 4));
          u[l + 16] = static_cast<uint8_t>((b[o + l] >> 4) | (((qh >> (l + 16)) & 1) << 4));
        }
      }
      return;
    }
    case TensorType::Q8_0:
      for (int64_t i = 0; i < cols / 32; ++i, b += 34, u += 32) {
        s[i] = load_f16(b);
        for (int l = 0; l < 32; ++l) u[l] = static_cast<uint8_t>(b[2 + l] ^ 0x80);
      }
      return;
    case TensorType::Q4_K:
    case TensorType::Q5_K: {
      const bool q5 = t == TensorType::Q5_K;
      for (int64_t i = 0; i < cols / 256; ++i, b += q5 ? 176 : 144, u += 256, s += 8, m += 8) {
        const float d = load_f16(b), dmin = load_f16(b + 2);
        const uint8_t* qh = b + 16;
        const uint8_t* qs = b + (q5 ? 48 : 16);
        for (int j = 0; j < 8; ++j) {
          int sc, mn;
          k_scale_min(b + 4, j, sc, mn);
          s[j] = d * static_cast<float>(sc);
          m[j] = -(dmin * static_cast<float>(mn));
          for (int l = 0; l < 32; ++l) {
            int v = (qs[32 * (j / 2) + l] >> (4 * (j & 1))) & 15;
            if (q5) v |= ((qh[l] >> j) & 1) << 4;
            u[32 * j + l] = static_cast<uint8_t>(v);
          }
        }
      }
      return;
    }
    case TensorType::Q6_K:
      for (int64_t i = 0; i < cols / 256; ++i, b += 210, u += 256, s += 16) {
        const float d = load_f16(b + 208);
        for (int j = 0; j < 16; ++j) s[j] = d * static_cast<float>(static_cast<int8_t>(b[192 + j]));
        for (int e = 0; e < 256; ++e) u[e] = static_cast<uint8_t>(q6k_value(b, e));
      }
      return;
    default: throw_unsupported(t, "matmul");
  }
}

#if defined(KVSQ_AVX512VNNI) || defined(KVSQ_AVX2_QUANT)
// Shared by the AVX-512 and the AVX2 unpackers.
// Q4_0 Q4_1 Q5_0 Q5_1 blocks of 32: f16 scale, [f16 min], [32 fifth bits], 16 bytes of nibbles at qo.
template <TensorType T>
struct LegacyBlock {
  static constexpr bool is = T == TensorType::Q4_0 || T == TensorType::Q4_1 || T == TensorType::Q5_0 || T == TensorType::Q5_1;
  static constexpr bool has_m = T == TensorType::Q4_1 || T == TensorType::Q5_1;
  static constexpr bool has_h = T == TensorType::Q5_0 || T == TensorType::Q5_1;
  static constexpr size_t bytes = has_m ? (has_h ? 24 : 20) : (has_h ? 22 : 18);
  static constexpr size_t qo = (has_m ? 4 : 2) + (has_h ? 4 : 0);
};

// Q8_0: signed codes + 128 (flipping the sign bit) make the unsigned codes.
inline void unpack_q8_0_avx2(const uint8_t* b, int64_t cols, uint8_t* u, float* s) {
  for (int64_t i = 0; i < cols / 32; ++i, b += 34, u += 32) {
    s[i] = load_f16(b);
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(u), _mm256_xor_si256(q, _mm256_set1_epi8(-128)));
  }
}
#endif

#if defined(KVSQ_AVX512VNNI)
// Vectorized unpackers (same output as unpack_scalar).
inline __m256i nibbles_32(const uint8_t* qs16) {  // 16 packed bytes -> 32 codes (lo then hi)
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs16));
  const __m256i w = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
  return _mm256_and_si256(w, _mm256_set1_epi8(15));
}

// The 64 codes of two consecutive blocks of 32 at b (a legacy type or Q8_0; only the first when
// `one`, the rest zero), as the row-dot and unpack paths both use them.
template <TensorType T>
inline __m512i codes64(const uint8_t* b, bool one) {
  constexpr size_t bytes = T == TensorType::Q8_0 ? 34 : LegacyBlock<T>::bytes;
  if constexpr (T == TensorType::Q8_0) {
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2));
    const __m256i hi = one ? _mm256_set1_epi8(-128) : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + bytes + 2));
    const __m512i q = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), _mm512_set1_epi8(-128));
    return q;
  } else {
    constexpr size_t qo = LegacyBlock<T>::qo;
    const __m128i qa = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + qo));
    const __m128i qb = one ? _mm_setzero_si128() : _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + bytes + qo));
    const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(qa), qb, 1);
    __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1);  // A.q B.q A.q>>4 B.q>>4
    w = _mm512_and_si512(_mm512_shuffle_i64x2(w, w, _MM_SHUFFLE(3, 1, 2, 0)), _mm512_set1_epi8(15));
    if constexpr (LegacyBlock<T>::has_h) {
      const uint64_t qh = load_u32(b + qo - 4) | (one ? 0 : static_cast<uint64_t>(load_u32(b + bytes + qo - 4)) << 32);
      w = _mm512_mask_add_epi8(w, _cvtu64_mask64(qh), w, _mm512_set1_epi8(16));
    }
    return w;
  }
}

template <TensorType T>
void unpack_avx(const uint8_t* b, int64_t cols, uint8_t* u, float* s, float* m) {
  if constexpr (LegacyBlock<T>::is) {
    constexpr bool has_m = LegacyBlock<T>::has_m, has_h = LegacyBlock<T>::has_h;
    constexpr size_t bytes = LegacyBlock<T>::bytes, qo = LegacyBlock<T>::qo;
    const int64_t nb = cols / 32;
    int64_t i = 0;
    // Two blocks per step: [A.qs | B.qs] -> [A.lo A.hi B.lo B.hi] in one 512-bit vector.
    for (; i + 2 <= nb; i += 2, b += 2 * bytes, u += 64) {
      s[i] = load_f16(b);
      s[i + 1] = load_f16(b + bytes);
      if constexpr (has_m) {
        m[i] = load_f16(b + 2);
        m[i + 1] = load_f16(b + bytes + 2);
      }
      _mm512_storeu_si512(u, codes64<T>(b, false));
    }
    for (; i < nb; ++i, b += bytes, u += 32) {
      s[i] = load_f16(b);
      if constexpr (has_m) m[i] = load_f16(b + 2);
      __m256i q = nibbles_32(b + qo);
      if constexpr (has_h)
        q = _mm256_mask_add_epi8(q, static_cast<__mmask32>(load_u32(b + qo - 4)), q, _mm256_set1_epi8(16));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(u), q);
    }
  } else if constexpr (T == TensorType::Q8_0) {
    unpack_q8_0_avx2(b, cols, u, s);
  } else if constexpr (T == TensorType::Q4_K || T == TensorType::Q5_K) {
    constexpr bool q5 = T == TensorType::Q5_K;
    for (int64_t i = 0; i < cols / 256; ++i, b += q5 ? 176 : 144, u += 256, s += 8, m += 8) {
      // 8 six-bit scales and mins from 12 bytes, as two 8-byte vectors (see k_scale_min).
      const uint32_t w0 = load_u32(b + 4), w1 = load_u32(b + 8), w2 = load_u32(b + 12);
      const uint64_t sc8 =
          (w0 & 0x3f3f3f3fu) | (static_cast<uint64_t>((w2 & 0x0f0f0f0fu) | ((w0 >> 2) & 0x30303030u)) << 32);
      const uint64_t mn8 =
          (w1 & 0x3f3f3f3fu) | (static_cast<uint64_t>(((w2 >> 4) & 0x0f0f0f0fu) | ((w1 >> 2) & 0x30303030u)) << 32);
      const __m256 scf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(sc8))));
      const __m256 mnf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(mn8))));
      _mm256_storeu_ps(s, _mm256_mul_ps(_mm256_set1_ps(load_f16(b)), scf));
      _mm256_storeu_ps(m, _mm256_mul_ps(_mm256_set1_ps(-load_f16(b + 2)), mnf));
      const uint8_t* qs = b + (q5 ? 48 : 16);
      __m256i qh;
      if constexpr (q5) qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16));
      for (int p = 0; p < 4; ++p) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * p));
        __m256i lo = _mm256_and_si256(v, _mm256_set1_epi8(15));
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(15));
        if constexpr (q5) {
          const __mmask32 klo = _mm256_test_epi8_mask(qh, _mm256_set1_epi8(static_cast<char>(1 << (2 * p))));
          const __mmask32 khi = _mm256_test_epi8_mask(qh, _mm256_set1_epi8(static_cast<char>(1 << (2 * p + 1))));
          lo = _mm256_mask_add_epi8(lo, klo, lo, _mm256_set1_epi8(16));
          hi = _mm256_mask_add_epi8(hi, khi, hi, _mm256_set1_epi8(16));
        }
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(u + 64 * p), lo);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(u + 64 * p + 32), hi);
      }
    }
  } else if constexpr (T == TensorType::Q6_K) {
    const __m512i cnt_a = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    const __m512i cnt_b = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    const __m512i k15 = _mm512_set1_epi8(15), k3 = _mm512_set1_epi8(3);
    for (int64_t i = 0; i < cols / 256; ++i, b += 210, u += 256, s += 16) {
      const float d = load_f16(b + 208);
      const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192));
      _mm512_storeu_ps(s, _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc8))));
      for (int h = 0; h < 2; ++h) {
        const __m512i ql = _mm512_loadu_si512(b + 64 * h);
        const __m512i qh =
            _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h)));
        const __m512i lo = _mm512_and_si512(ql, k15);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(ql, 4), k15);
        const __m512i ha = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, cnt_a), k3), 4);
        const __m512i hb = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, cnt_b), k3), 4);
        _mm512_storeu_si512(u + 128 * h, _mm512_or_si512(lo, ha));
        _mm512_storeu_si512(u + 128 * h + 64, _mm512_or_si512(hi, hb));
      }
    }
  }
}
#endif

#if defined(KVSQ_AVX2_QUANT)
// AVX2 unpackers (same output as unpack_scalar).
inline __m256i nibbles32_avx2(const uint8_t* qs16) {  // 16 packed bytes -> 32 codes (lo then hi)
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs16));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(15));
}
// 32 bits -> 32 bytes, 0xFF where the bit is set.
inline __m256i bits_to_bytes(uint32_t bits) {
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(bits)),
      _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
  const __m256i mask = _mm256_set1_epi64x(0x8040201008040201);
  return _mm256_cmpeq_epi8(_mm256_and_si256(spread, mask), mask);
}

template <TensorType T>
void unpack_avx2(const uint8_t* b, int64_t cols, uint8_t* u, float* s, float* m) {
  const __m256i k15 = _mm256_set1_epi8(15), k16 = _mm256_set1_epi8(16), k3 = _mm256_set1_epi8(3);
  if constexpr (LegacyBlock<T>::is) {
    constexpr bool has_m = LegacyBlock<T>::has_m, has_h = LegacyBlock<T>::has_h;
    constexpr size_t bytes = LegacyBlock<T>::bytes, qo = LegacyBlock<T>::qo;
    for (int64_t i = 0; i < cols / 32; ++i, b += bytes, u += 32) {
      s[i] = load_f16(b);
      if constexpr (has_m) m[i] = load_f16(b + 2);
      __m256i q = nibbles32_avx2(b + qo);
      if constexpr (has_h) q = _mm256_or_si256(q, _mm256_and_si256(bits_to_bytes(load_u32(b + qo - 4)), k16));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(u), q);
    }
  } else if constexpr (T == TensorType::Q8_0) {
    unpack_q8_0_avx2(b, cols, u, s);
  } else if constexpr (T == TensorType::Q4_K || T == TensorType::Q5_K) {
    constexpr bool q5 = T == TensorType::Q5_K;
    for (int64_t i = 0; i < cols / 256; ++i, b += q5 ? 176 : 144, u += 256, s += 8, m += 8) {
      const float d = load_f16(b), dmin = load_f16(b + 2);
      for (int j = 0; j < 8; ++j) {
        int sc, mn;
        k_scale_min(b + 4, j, sc, mn);
        s[j] = d * static_cast<float>(sc);
        m[j] = -(dmin * static_cast<float>(mn));
      }
      const uint8_t* qs = b + (q5 ? 48 : 16);
      __m256i qh = _mm256_setzero_si256();
      if constexpr (q5) qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16));
      for (int p = 0; p < 4; ++p) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * p));
        __m256i lo = _mm256_and_si256(v, k15);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), k15);
        if constexpr (q5) {
          const __m256i blo = _mm256_set1_epi8(static_cast<char>(1 << (2 * p)));
          const __m256i bhi = _mm256_set1_epi8(static_cast<char>(1 << (2 * p + 1)));
          lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, blo), blo), k16));
          hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bhi), bhi), k16));
        }
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(u + 64 * p), lo);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(u + 64 * p + 32), hi);
      }
    }
  } else if constexpr (T == TensorType::Q6_K) {
    for (int64_t i = 0; i < cols / 256; ++i, b += 210, u += 256, s += 16) {
      const float d = load_f16(b + 208);
      for (int j = 0; j < 16; ++j) s[j] = d * static_cast<float>(static_cast<int8_t>(b[192 + j]));
      for (int h = 0; h < 2; ++h) {
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h));
        for (int qq = 0; qq < 4; ++qq) {
          const __m256i ql = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * h + 32 * (qq & 1)));
          const __m256i nib = qq < 2 ? _mm256_and_si256(ql, k15) : _mm256_and_si256(_mm256_srli_epi16(ql, 4), k15);
          const __m256i hb = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * qq)), k3);
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(u + 128 * h + 32 * qq),
                              _mm256_or_si256(nib, _mm256_slli_epi16(hb, 4)));
        }
      }
    }
  }
}
#endif

using UnpackFn = void (*)(const uint8_t*, int64_t, uint8_t*, float*, float*);

// unpack_scalar with its type fixed at compile time, to fit UnpackFn.
template <TensorType T>
void unpack_scalar_of(const uint8_t* b, int64_t n, uint8_t* u, float* s, float* m) {
  unpack_scalar(T, b, n, u, s, m);
}

// pick(std::integral_constant<TensorType, T>) for the quantized type t; null for other types.
template <class Pick>
UnpackFn by_quant_type(TensorType t, Pick pick) {
  switch (t) {
    case TensorType::Q4_0: return pick(std::integral_constant<TensorType, TensorType::Q4_0>{});
    case TensorType::Q4_1: return pick(std::integral_constant<TensorType, TensorType::Q4_1>{});
    case TensorType::Q5_0: return pick(std::integral_constant<TensorType, TensorType::Q5_0>{});
    case TensorType::Q5_1: return pick(std::integral_constant<TensorType, TensorType::Q5_1>{});
    case TensorType::Q8_0: return pick(std::integral_constant<TensorType, TensorType::Q8_0>{});
    case TensorType::Q4_K: return pick(std::integral_constant<TensorType, TensorType::Q4_K>{});
    case TensorType::Q5_K: return pick(std::integral_constant<TensorType, TensorType::Q5_K>{});
    case TensorType::Q6_K: return pick(std::integral_constant<TensorType, TensorType::Q6_K>{});
    default: return nullptr;
  }
}

UnpackFn unpacker(TensorType t) {
  const UnpackFn unpack = by_quant_type(t, [](auto type) -> UnpackFn {
#if defined(KVSQ_AVX512VNNI)
    return unpack_avx<decltype(type)::value>;
#elif defined(KVSQ_AVX2_QUANT)
    return unpack_avx2<decltype(type)::value>;
#else
    return unpack_scalar_of<decltype(type)::value>;
#endif
  });
  if (!unpack) throw_unsupported(t, "matmul");
  return unpack;
}

#if defined(KVSQ_AVX512VNNI)
// The panel path's unpacker of rows packed at load time (kernels/weight_packing.h).
UnpackFn packed_unpacker(TensorType t) {
  return by_quant_type(t, [](auto type) -> UnpackFn {
    constexpr TensorType tt = decltype(type)::value;
    if constexpr (tt == TensorType::Q4_0 || tt == TensorType::Q5_0 || tt == TensorType::Q8_0) return packed::unpack_row<tt>;
    return nullptr;
  });
}
#endif

// ---------------------------------------------------------------------------------------------
// Quantized activations for one call. Per token t:
//   q   [kp]     int8 codes, zero padded to kp = cols rounded up to 64
//   dxs [nsp]    activation scale of each weight sub-block (nsp = sub-blocks rounded up to 16)
//   corr[nsp]    -off * (sum of codes in the sub-block)          (symmetric types)
//   X   [nsp]    dx * (sum of codes in the sub-block)              (asymmetric types)
//   c64 [kp/64 x 16] corr laid out per 64-code chunk for the row-dot kernel: lane SB/4 * i holds
//                sub-block i of the chunk, other lanes 0                  (symmetric, decode path)
struct Acts {
  int64_t kp = 0, nsp = 0, nsub = 0;
  int8_t* q = nullptr;
  float* dxs = nullptr;
  int32_t* corr = nullptr;
  float* X = nullptr;
  int32_t* c64 = nullptr;
  const int8_t* tq(int64_t t) const { return q + t * kp; }
  const float* tdxs(int64_t t) const { return dxs + t * nsp; }
  const int32_t* tcorr(int64_t t) const { return corr + t * nsp; }
  const float* tX(int64_t t) const { return X + t * nsp; }
  const int32_t* tc64(int64_t t) const { return c64 + t * kp / 64 * 16; }
  // Codes, scales and the per-block sums (X for asymmetric types, else corr) of n tokens.
  void take(Carver& c, const QuantKind& k, int64_t n) {
    q = c.take<int8_t>(n * kp);
    dxs = c.take<float>(n * nsp);
    if (k.asym)
      X = c.take<float>(n * nsp);
    else
      corr = c.take<int32_t>(n * nsp);
  }
};

// Quantizes token t of x (cols floats) into acts.
void quantize_token(const float* x, int64_t cols, const QuantKind& k, bool want_c64, Acts& a, int64_t t) {
  int8_t* q = a.q + t * a.kp;
  float* dxs = a.dxs + t * a.nsp;
  int32_t* corr = a.corr ? a.corr + t * a.nsp : nullptr;
  float* X = a.X ? a.X + t * a.nsp : nullptr;
  int32_t sums16[2];
  const int sub_per_block = 32 / k.sb;
  for (int64_t blk = 0; blk < cols / 32; ++blk) {
    const float* xb = x + 32 * blk;
    int8_t* qb = q + 32 * blk;
    float d;
#if defined(KVSQ_AVX512VNNI)
    const __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    d = amax / 127.0f;
    const __m512 id = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    const __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id));
    const __m512i i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qb), _mm512_cvtsepi32_epi8(i0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qb + 16), _mm512_cvtsepi32_epi8(i1));
    sums16[0] = _mm512_reduce_add_epi32(i0);
    sums16[1] = _mm512_reduce_add_epi32(i1);
#elif defined(KVSQ_AVX2_QUANT)
    {
      const __m256 sign = _mm256_set1_ps(-0.0f);
      __m256 v[4], mx = _mm256_setzero_ps();
      for (int i = 0; i < 4; ++i) {
        v[i] = _mm256_loadu_ps(xb + 8 * i);
        mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[i]));
      }
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
      const float amax = _mm_cvtss_f32(m4);
      d = amax / 127.0f;
      const __m256 id = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
      __m256i iv[4];
      for (int i = 0; i < 4; ++i) iv[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], id));  // round to nearest even
      for (int h = 0; h < 2; ++h) {
        const __m256i sum = _mm256_add_epi32(iv[2 * h], iv[2 * h + 1]);
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        sums16[h] = _mm_cvtsi128_si32(s4);
      }
      // int32 -> int8 (values are within [-127, 127]); packs interleave 128-bit lanes, so restore order.
      const __m256i p16a = _mm256_packs_epi32(iv[0], iv[1]), p16b = _mm256_packs_epi32(iv[2], iv[3]);
      const __m256i p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16a, p16b),
                                                     _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qb), p8);
    }
#else
    float amax = 0.0f;
    for (int l = 0; l < 32; ++l) amax = std::max(amax, std::fabs(xb[l]));
    d = amax / 127.0f;
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    sums16[0] = sums16[1] = 0;
    for (int l = 0; l < 32; ++l) {
      int v = static_cast<int>(std::nearbyint(xb[l] * id));
      v = std::clamp(v, -127, 127);
      qb[l] = static_cast<int8_t>(v);
      sums16[l / 16] += v;
    }
#endif
    for (int i = 0; i < sub_per_block; ++i) {
      const int64_t j = blk * sub_per_block + i;
      const int32_t sum = k.sb == 16 ? sums16[i] : sums16[0] + sums16[1];
      dxs[j] = d;
      if (corr) corr[j] = -k.off * sum;
      if (X) X[j] = d * static_cast<float>(sum);
    }
  }
  std::memset(q + cols, 0, static_cast<size_t>(a.kp - cols));
  for (int64_t j = a.nsub; j < a.nsp; ++j) {
    dxs[j] = 0.0f;
    if (corr) corr[j] = 0;
    if (X) X[j] = 0.0f;
  }
  if (want_c64 && corr) {
    int32_t* c = a.c64 + t * a.kp / 64 * 16;
    const int per_chunk = 64 / k.sb;
    for (int64_t ch = 0; ch < a.kp / 64; ++ch) {
      for (int l = 0; l < 16; ++l) c[16 * ch + l] = 0;
      for (int i = 0; i < per_chunk; ++i) {
        const int64_t j = ch * per_chunk + i;
        c[16 * ch + i * (16 / per_chunk)] = j < a.nsub ? corr[j] : 0;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Portable row-dot for quantized weights (the fallback path; also the reference for the
// vector kernels' arithmetic).
float dot_unpacked_scalar(const uint8_t* u, const float* s, const float* m, const QuantKind& k, const Acts& a,
                          int64_t t, int64_t cols) {
  const int8_t* q = a.tq(t);
  const float* dxs = a.tdxs(t);
  float acc = 0.0f;
  for (int64_t j = 0; j < cols / k.sb; ++j) {
    int32_t isum = k.asym ? 0 : a.tcorr(t)[j];
    for (int l = 0; l < k.sb; ++l) isum += static_cast<int32_t>(u[j * k.sb + l]) * q[j * k.sb + l];
    acc += s[j] * dxs[j] * static_cast<float>(isum);
    if (k.asym) acc += m[j] * a.tX(t)[j];
  }
  return acc;
}

#if defined(KVSQ_AVX512VNNI)
// ---------------------------------------------------------------------------------------------
// Decode kernel: one unpacked row against NT tokens.
alignas(64) constexpr int32_t kPermIdx32[8][16] = {{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},
                                                   {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
                                                   {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5},
                                                   {6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
                                                   {8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9},
                                                   {10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
                                                   {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13},
                                                   {14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15}};
alignas(64) constexpr int32_t kPermIdx16[4][16] = {{0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3},
                                                   {4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7},
                                                   {8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11},
                                                   {12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15}};

template <int SB, bool ASYM, int NT>
inline void dot_chunk(int64_t ch, const __m512i idx, const uint8_t* u, const __m512* ss, const Acts& a, int64_t t0,
                      __m512* acc) {
  const __m512i w = _mm512_loadu_si512(u + 64 * ch);
  for (int t = 0; t < NT; ++t) {
    const __m512i init = ASYM ? _mm512_setzero_si512() : _mm512_loadu_si512(a.tc64(t0 + t) + 16 * ch);
    const __m512i isum = _mm512_dpbusd_epi32(init, w, _mm512_loadu_si512(a.tq(t0 + t) + 64 * ch));
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_permutexvar_ps(idx, ss[t]), acc[t]);
  }
}

template <int SB, bool ASYM, int NT>
void dot_row(const uint8_t* u, const float* s, const float* m, const Acts& a, int64_t t0, float* y, int64_t ldy) {
  constexpr int kCPG = SB == 32 ? 8 : 4;  // 64-code chunks per group of 16 sub-blocks
  const int64_t nchunks = a.kp / 64;
  // Two accumulator sets (even / odd chunks) so that consecutive FMAs do not wait on each other.
  __m512 acc0[NT], acc1[NT];
  for (int t = 0; t < NT; ++t) acc0[t] = acc1[t] = _mm512_setzero_ps();
  int64_t g = 0, c0 = 0;
  for (; c0 < nchunks; ++g, c0 += kCPG) {
    const __m512 sv = _mm512_loadu_ps(s + 16 * g);
    __m512 ss[NT];
    for (int t = 0; t < NT; ++t) ss[t] = _mm512_mul_ps(sv, _mm512_loadu_ps(a.tdxs(t0 + t) + 16 * g));
    if (c0 + kCPG <= nchunks) {
#pragma GCC unroll 8
      for (int c = 0; c < kCPG; c += 2) {
        dot_chunk<SB, ASYM, NT>(c0 + c, _mm512_load_si512(SB == 32 ? kPermIdx32[c] : kPermIdx16[c]), u, ss, a, t0,
                                acc0);
        dot_chunk<SB, ASYM, NT>(c0 + c + 1, _mm512_load_si512(SB == 32 ? kPermIdx32[c + 1] : kPermIdx16[c + 1]), u, ss,
                                a, t0, acc1);
      }
    } else {
      const int cn = static_cast<int>(nchunks - c0);
      int c = 0;
      for (; c + 2 <= cn; c += 2) {
        dot_chunk<SB, ASYM, NT>(c0 + c, _mm512_load_si512(SB == 32 ? kPermIdx32[c] : kPermIdx16[c]), u, ss, a, t0,
                                acc0);
        dot_chunk<SB, ASYM, NT>(c0 + c + 1, _mm512_load_si512(SB == 32 ? kPermIdx32[c + 1] : kPermIdx16[c + 1]), u, ss,
                                a, t0, acc1);
      }
      if (c < cn)
        dot_chunk<SB, ASYM, NT>(c0 + c, _mm512_load_si512(SB == 32 ? kPermIdx32[c] : kPermIdx16[c]), u, ss, a, t0,
                                acc0);
    }
    if constexpr (ASYM) {
      const __m512 mv = _mm512_loadu_ps(m + 16 * g);
      for (int t = 0; t < NT; ++t) acc1[t] = _mm512_fmadd_ps(mv, _mm512_loadu_ps(a.tX(t0 + t) + 16 * g), acc1[t]);
    }
  }
  for (int t = 0; t < NT; ++t) y[(t0 + t) * ldy] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[t], acc1[t]));
}

// Decode kernel for NT (1-3) tokens: 4 unpacked rows (u + r*kp, s + r*nsp, m + r*nsp) at once,
// sharing the activation loads and the final reduction; writes y[t * ldy + 0..3]. Each token's
// arithmetic is the same whatever NT, so a server's step of 2-3 sequences gives each the logits
// it gets alone, to the bit.
template <int SB, bool ASYM, int NT>
void dot_rows4(const uint8_t* u, const float* s, const float* m, const Acts& a, int64_t t0, float* y, int64_t ldy) {
  constexpr int kCPG = SB == 32 ? 8 : 4;
  const int64_t nchunks = a.kp / 64, kp = a.kp, nsp = a.nsp;
  __m512 acc[NT][4];
  for (int t = 0; t < NT; ++t)
    for (int r = 0; r < 4; ++r) acc[t][r] = _mm512_setzero_ps();
  for (int64_t g = 0, c0 = 0; c0 < nchunks; ++g, c0 += kCPG) {
    __m512 ss[NT][4];
    for (int t = 0; t < NT; ++t) {
      const __m512 dx = _mm512_loadu_ps(a.tdxs(t0 + t) + 16 * g);
      for (int r = 0; r < 4; ++r) ss[t][r] = _mm512_mul_ps(_mm512_loadu_ps(s + r * nsp + 16 * g), dx);
    }
    const int cn = static_cast<int>(std::min<int64_t>(kCPG, nchunks - c0));
    for (int c = 0; c < cn; ++c) {
      const int64_t ch = c0 + c;
      const __m512i idx = _mm512_load_si512(SB == 32 ? kPermIdx32[c] : kPermIdx16[c]);
      __m512i w[4];
      for (int r = 0; r < 4; ++r) w[r] = _mm512_loadu_si512(u + r * kp + 64 * ch);
      for (int t = 0; t < NT; ++t) {
        const __m512i xv = _mm512_loadu_si512(a.tq(t0 + t) + 64 * ch);
        const __m512i init = ASYM ? _mm512_setzero_si512() : _mm512_loadu_si512(a.tc64(t0 + t) + 16 * ch);
        for (int r = 0; r < 4; ++r) {
          const __m512i isum = _mm512_dpbusd_epi32(init, w[r], xv);
          acc[t][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_permutexvar_ps(idx, ss[t][r]), acc[t][r]);
        }
      }
    }
    if constexpr (ASYM) {
      for (int t = 0; t < NT; ++t) {
        const __m512 xv = _mm512_loadu_ps(a.tX(t0 + t) + 16 * g);
        for (int r = 0; r < 4; ++r) acc[t][r] = _mm512_fmadd_ps(_mm512_loadu_ps(m + r * nsp + 16 * g), xv, acc[t][r]);
      }
    }
  }
  for (int t = 0; t < NT; ++t) _mm_storeu_ps(y + (t0 + t) * ldy, reduce4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]));
}

// dot_rows4 straight from Q4_0 / Q5_0 / Q8_0 rows (Qwen2.5's 896-wide matrices and its embedding):
// 4 rows at row0 + i * row_bytes, NT tokens from t0, the blocks read in place instead of unpacked
// into a buffer and read again. Codes, scales and the order of every operation are those of
// unpack_avx + dot_rows4<32, false> (checked: the default model's decode logprobs are unchanged
// to the last bit), with the rows kDecodePrefetchRows ahead prefetched.
template <TensorType T, int NT>
void dot_rows4_direct(const uint8_t* row0, size_t row_bytes, int64_t cols, const Acts& a, int64_t t0, float* y,
                      int64_t ldy) {
  constexpr int64_t bytes = T == TensorType::Q8_0 ? 34 : static_cast<int64_t>(LegacyBlock<T>::bytes);
  const int64_t nchunks = a.kp / 64, nb = cols / 32;
  // Four rows read chunk by chunk are four interleaved streams, which the hardware prefetchers
  // follow poorly: fetch the rows kDecodePrefetchRows ahead while these are computed.
  const uint8_t* next = row0 + kDecodePrefetchRows * row_bytes;
  const int64_t ahead = static_cast<int64_t>(4 * row_bytes);
  __m512 acc[NT][4];
  for (int t = 0; t < NT; ++t)
    for (int r = 0; r < 4; ++r) acc[t][r] = _mm512_setzero_ps();
  for (int64_t g = 0, c0 = 0; c0 < nchunks; ++g, c0 += 8) {
    __m512 dx[NT];
    for (int t = 0; t < NT; ++t) dx[t] = _mm512_loadu_ps(a.tdxs(t0 + t) + 16 * g);
    const int cn = static_cast<int>(std::min<int64_t>(8, nchunks - c0));
    for (int c = 0; c < cn; ++c) {
      const int64_t ch = c0 + c, j = 2 * ch;
      for (int64_t p = ch * ahead / nchunks / 64 * 64; p < (ch + 1) * ahead / nchunks; p += 64)
        _mm_prefetch(reinterpret_cast<const char*>(next + p), _MM_HINT_T0);
      const __m512i idx = _mm512_load_si512(kPermIdx32[c]);
      __m512i u[4];
      __m512 sc[4];
      for (int r = 0; r < 4; ++r) {
        const uint8_t* b = row0 + r * row_bytes + j * bytes;
        u[r] = _mm512_setzero_si512();
        sc[r] = _mm512_setzero_ps();
        if (j < nb) {
          const bool one = j + 1 >= nb;
          u[r] = codes64<T>(b, one);
          sc[r] = _mm512_insertf32x8(_mm512_set1_ps(load_f16(b)), _mm256_set1_ps(one ? 0.0f : load_f16(b + bytes)), 1);
        }
      }
      for (int t = 0; t < NT; ++t) {
        const __m512i xv = _mm512_loadu_si512(a.tq(t0 + t) + 64 * ch);
        const __m512i init = _mm512_loadu_si512(a.tc64(t0 + t) + 16 * ch);
        // dot_rows4 multiplies the 16 scales of the group by dx and spreads the chunk's two over
        // its lanes; spreading first and multiplying the same pairs gives the same floats.
        const __m512 dxc = _mm512_permutexvar_ps(idx, dx[t]);
        for (int r = 0; r < 4; ++r) {
          const __m512i isum = _mm512_dpbusd_epi32(init, u[r], xv);
          acc[t][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(sc[r], dxc), acc[t][r]);
        }
      }
    }
  }
  for (int t = 0; t < NT; ++t) _mm_storeu_ps(y + (t0 + t) * ldy, reduce4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]));
}

// Calls f(std::integral_constant<int, NT>{}, t0) for the tokens in groups of at most 3 (the
// registers of dot_rows4 / dot_rows4_direct hold 3 x 4 accumulators): every token then gets the
// arithmetic it gets alone.
template <class F>
void in_groups_of_3(int64_t n_tokens, F f) {
  for (int64_t t0 = 0; t0 < n_tokens; t0 += 3) {
    const int64_t nt = std::min<int64_t>(3, n_tokens - t0);
    if (nt == 1) f(std::integral_constant<int, 1>{}, t0);
    else if (nt == 2) f(std::integral_constant<int, 2>{}, t0);
    else f(std::integral_constant<int, 3>{}, t0);
  }
}

template <int SB, bool ASYM>
void dot_row_tokens(const uint8_t* u, const float* s, const float* m, const Acts& a, int64_t n_tokens, float* y,
                    int64_t ldy) {
  int64_t t = 0;
  for (; t + 4 <= n_tokens; t += 4) dot_row<SB, ASYM, 4>(u, s, m, a, t, y, ldy);
  switch (n_tokens - t) {
    case 3: dot_row<SB, ASYM, 3>(u, s, m, a, t, y, ldy); break;
    case 2: dot_row<SB, ASYM, 2>(u, s, m, a, t, y, ldy); break;
    case 1: dot_row<SB, ASYM, 1>(u, s, m, a, t, y, ldy); break;
    default: break;
  }
}

// ---------------------------------------------------------------------------------------------
// Prefill kernel: a packed panel of 16 rows against NT tokens.
// Panel layout: P[kg][r][4] = codes 4kg..4kg+3 of row r (64 bytes per kg); S[j][r], M[j][r].
constexpr int kLaneNT = 6;  // tokens per lane tile: 2 panels x 6 tokens of accumulators fill the registers
constexpr int kPanelGroup = 4;

// Up to two panels of a lane tile: codes, scales, biases and the rows each stores.
struct PanelRefs {
  const uint8_t* P[2];
  const float* S[2];
  const float* M[2];
  __mmask16 rmask[2];
};

inline int32_t load_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// NP panels (1 or 2, rows y + 16 i of panel i) x NT tokens. Two panels share each broadcast token
// group: 2 weight loads + NT broadcasts feed 2 NT vpdpbusd (one panel: 1 + NT loads for NT), which
// takes the prompt product from load-bound to vpdpbusd-bound. Each panel's arithmetic for a token
// is the one-panel tile's, in the same order: the same numbers whatever NP and NT.
template <int SB, bool ASYM, int NT, int NP>
void lane_tile(const PanelRefs& pr, int64_t nsub, const Acts& a, int64_t t0, float* y, int64_t ldy) {
  __m512 fa[NP][NT];
  for (int i = 0; i < NP; ++i)
    for (int t = 0; t < NT; ++t) fa[i][t] = _mm512_setzero_ps();
  const int8_t* q[NT];
  for (int t = 0; t < NT; ++t) q[t] = a.tq(t0 + t);
  for (int64_t j = 0; j < nsub; ++j) {
    __m512i ia[NP][NT];
    for (int t = 0; t < NT; ++t) {
      const __m512i init = ASYM ? _mm512_setzero_si512() : _mm512_set1_epi32(a.tcorr(t0 + t)[j]);
      for (int i = 0; i < NP; ++i) ia[i][t] = init;
    }
#pragma GCC unroll 8
    for (int g = 0; g < SB / 4; ++g) {
      __m512i w[NP];
      for (int i = 0; i < NP; ++i) w[i] = _mm512_load_si512(pr.P[i] + j * SB * 16 + 64 * g);
      for (int t = 0; t < NT; ++t) {
        const __m512i x4 = _mm512_set1_epi32(load_i32(q[t] + j * SB + 4 * g));
        for (int i = 0; i < NP; ++i) ia[i][t] = _mm512_dpbusd_epi32(ia[i][t], w[i], x4);
      }
    }
    for (int i = 0; i < NP; ++i) {
      const __m512 sv = _mm512_load_ps(pr.S[i] + 16 * j);
      for (int t = 0; t < NT; ++t)
        fa[i][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[i][t]), _mm512_mul_ps(sv, _mm512_set1_ps(a.tdxs(t0 + t)[j])), fa[i][t]);
      if constexpr (ASYM) {
        const __m512 mv = _mm512_load_ps(pr.M[i] + 16 * j);
        for (int t = 0; t < NT; ++t) fa[i][t] = _mm512_fmadd_ps(mv, _mm512_set1_ps(a.tX(t0 + t)[j]), fa[i][t]);
      }
    }
  }
  for (int i = 0; i < NP; ++i)
    for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + (t0 + t) * ldy + 16 * i, pr.rmask[i], fa[i][t]);
}

template <int SB, bool ASYM, int NP>
void lane_tile_n(int nt, const PanelRefs& pr, int64_t nsub, const Acts& a, int64_t t0, float* y, int64_t ldy) {
  switch (nt) {
    case 6: return lane_tile<SB, ASYM, 6, NP>(pr, nsub, a, t0, y, ldy);
    case 5: return lane_tile<SB, ASYM, 5, NP>(pr, nsub, a, t0, y, ldy);
    case 4: return lane_tile<SB, ASYM, 4, NP>(pr, nsub, a, t0, y, ldy);
    case 3: return lane_tile<SB, ASYM, 3, NP>(pr, nsub, a, t0, y, ldy);
    case 2: return lane_tile<SB, ASYM, 2, NP>(pr, nsub, a, t0, y, ldy);
    default: return lane_tile<SB, ASYM, 1, NP>(pr, nsub, a, t0, y, ldy);
  }
}

// The lane tiles of np consecutive panels (rows y, y + 16, ...) for tokens t0..t0+nt-1 (nt <= kLaneNT):
// two panels at a time, the odd one alone.
template <int SB, bool ASYM>
void lane_tiles(int np, const uint8_t* const* P, const float* const* S, const float* const* M, const __mmask16* rmask,
                int nt, const Acts& a, int64_t t0, float* y, int64_t ldy) {
  int i = 0;
  for (; i + 1 < np; i += 2) {
    const PanelRefs pr{{P[i], P[i + 1]}, {S[i], S[i + 1]}, {M[i], M[i + 1]}, {rmask[i], rmask[i + 1]}};
    lane_tile_n<SB, ASYM, 2>(nt, pr, a.nsub, a, t0, y + 16 * i, ldy);
  }
  if (i < np) lane_tile_n<SB, ASYM, 1>(nt, PanelRefs{{P[i]}, {S[i]}, {M[i]}, {rmask[i]}}, a.nsub, a, t0, y + 16 * i, ldy);
}

inline void lane_tiles(const QuantKind& k, int np, const uint8_t* const* P, const float* const* S, const float* const* M,
                       const __mmask16* rmask, int nt, const Acts& a, int64_t t0, float* y, int64_t ldy) {
  if (k.sb == 16) lane_tiles<16, false>(np, P, S, M, rmask, nt, a, t0, y, ldy);
  else if (k.asym) lane_tiles<32, true>(np, P, S, M, rmask, nt, a, t0, y, ldy);
  else lane_tiles<32, false>(np, P, S, M, rmask, nt, a, t0, y, ldy);
}

// ---------------------------------------------------------------------------------------------
// Float weights.
template <TensorType T>
inline __m512 load16_as_f32(const uint8_t* row, int64_t k) {
  if constexpr (T == TensorType::F32)
    return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + k);
  else if constexpr (T == TensorType::F16)
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * k)));
  else
    return _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * k))), 16));
}
template <TensorType T>
inline __m512 maskload16_as_f32(const uint8_t* row, int64_t k, __mmask16 mk) {
  if constexpr (T == TensorType::F32)
    return _mm512_maskz_loadu_ps(mk, reinterpret_cast<const float*>(row) + k);
  else if constexpr (T == TensorType::F16)
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, row + 2 * k));
  else
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, row + 2 * k)), 16));
}

template <TensorType T, int NT>
void float_dot_row(const uint8_t* row, const float* x, int64_t cols, int64_t t0, float* y, int64_t ldy) {
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= cols; k += 16) {
    const __m512 w = load16_as_f32<T>(row, k);
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + (t0 + t) * cols + k), acc[t]);
  }
  if (k < cols) {
    const __mmask16 mk = static_cast<__mmask16>((1u << (cols - k)) - 1);
    const __m512 w = maskload16_as_f32<T>(row, k, mk);
    for (int t = 0; t < NT; ++t)
      acc[t] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(mk, x + (t0 + t) * cols + k), acc[t]);
  }
  for (int t = 0; t < NT; ++t) y[(t0 + t) * ldy] = _mm512_reduce_add_ps(acc[t]);
}

// Four rows, one token (the float decode case); writes y[0..3].
template <TensorType T>
void float_dot_rows4(const uint8_t* row0, size_t row_bytes, const float* x, int64_t cols, float* y) {
  __m512 acc[4], acc2[4];  // two chains per row to cover the FMA latency
  for (int r = 0; r < 4; ++r) acc[r] = acc2[r] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= cols; k += 32) {
    const __m512 xv = _mm512_loadu_ps(x + k), xv2 = _mm512_loadu_ps(x + k + 16);
    for (int r = 0; r < 4; ++r) {
      acc[r] = _mm512_fmadd_ps(load16_as_f32<T>(row0 + r * row_bytes, k), xv, acc[r]);
      acc2[r] = _mm512_fmadd_ps(load16_as_f32<T>(row0 + r * row_bytes, k + 16), xv2, acc2[r]);
    }
  }
  for (int r = 0; r < 4; ++r) acc[r] = _mm512_add_ps(acc[r], acc2[r]);
  for (; k + 16 <= cols; k += 16) {
    const __m512 xv = _mm512_loadu_ps(x + k);
    for (int r = 0; r < 4; ++r) acc[r] = _mm512_fmadd_ps(load16_as_f32<T>(row0 + r * row_bytes, k), xv, acc[r]);
  }
  if (k < cols) {
    const __mmask16 mk = static_cast<__mmask16>((1u << (cols - k)) - 1);
    const __m512 xv = _mm512_maskz_loadu_ps(mk, x + k);
    for (int r = 0; r < 4; ++r) acc[r] = _mm512_fmadd_ps(maskload16_as_f32<T>(row0 + r * row_bytes, k, mk), xv, acc[r]);
  }
  _mm_storeu_ps(y, reduce4(acc[0], acc[1], acc[2], acc[3]));
}

template <TensorType T>
void float_dot_row_tokens(const uint8_t* row, const float* x, int64_t cols, int64_t n_tokens, float* y, int64_t ldy) {
  int64_t t = 0;
  for (; t + 4 <= n_tokens; t += 4) float_dot_row<T, 4>(row, x, cols, t, y, ldy);
  switch (n_tokens - t) {
    case 3: float_dot_row<T, 3>(row, x, cols, t, y, ldy); break;
    case 2: float_dot_row<T, 2>(row, x, cols, t, y, ldy); break;
    case 1: float_dot_row<T, 1>(row, x, cols, t, y, ldy); break;
    default: break;
  }
}

constexpr int kFloatNT = 12;

// Panel PF[k][16] (fp32) against NT tokens.
template <int NT>
void float_tile(const float* PF, const float* x, int64_t cols, int64_t t0, float* y, int64_t ldy, __mmask16 rmask) {
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  const float* xt = x + t0 * cols;
  for (int64_t k = 0; k < cols; ++k) {
    const __m512 w = _mm512_load_ps(PF + 16 * k);
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_fmadd_ps(w, _mm512_set1_ps(xt[t * cols + k]), acc[t]);
  }
  for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + (t0 + t) * ldy, rmask, acc[t]);
}

template <int N = kFloatNT>
void float_tile_n(int nt, const float* PF, const float* x, int64_t cols, int64_t t0, float* y, int64_t ldy,
                  __mmask16 rmask) {
  if constexpr (N >= 1) {
    if (nt == N) return float_tile<N>(PF, x, cols, t0, y, ldy, rmask);
    if constexpr (N > 1) float_tile_n<N - 1>(nt, PF, x, cols, t0, y, ldy, rmask);
  }
}
#endif  // KVSQ_AVX512VNNI

#if defined(KVSQ_AVX2_QUANT)
// ---------------------------------------------------------------------------------------------
// AVX2 row-dot kernel (CPUs without AVX-512 VNNI): one unpacked row against NT tokens.
// vpmaddubsw multiplies unsigned codes by signed activation bytes into saturating 16-bit pair
// sums: codes up to 63 (Q6_K) keep |pair| <= 2*63*127 < 32767. Q8_0's codes reach 255, so it
// runs SIGNED: the codes are turned back into int8 w = u - 128 and multiplied as |w| by
// sign(q, w) (|pair| <= 2*128*127), which already is sum (u - off) q, so no offset correction.
// The per-sub-block scale s_j*dx_j is applied in fp32 to the 8 lane sums of each 32-byte chunk;
// the offset correction (symmetric types) or the bias m_j*X_j (asymmetric) goes into the same
// accumulator 8 sub-blocks at a time.
inline float hsum8(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

template <int SB, bool ASYM, bool SIGNED, int NT>
void dot_row_avx2(const uint8_t* u, const float* s, const float* m, const Acts& a, int64_t t0, float* y,
                  int64_t ldy) {
  constexpr int kSubPerChunk = 32 / SB;  // sub-blocks per 32-byte chunk
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const int64_t nsub = a.nsub, nchunks = nsub / kSubPerChunk;
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t g = 0; g * 8 < nsub; ++g) {  // 8 sub-blocks per group
    const __m256 sv = _mm256_loadu_ps(s + 8 * g);
    __m256 ss[NT];
    for (int t = 0; t < NT; ++t) ss[t] = _mm256_mul_ps(sv, _mm256_loadu_ps(a.tdxs(t0 + t) + 8 * g));
    const int64_t c_end = std::min<int64_t>(nchunks, (g + 1) * 8 / kSubPerChunk);
    for (int64_t c = g * 8 / kSubPerChunk; c < c_end; ++c) {
      __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(u + 32 * c));
      __m256i wabs;
      if constexpr (SIGNED) {
        w = _mm256_xor_si256(w, flip);
        wabs = _mm256_abs_epi8(w);
      }
      const int lane = static_cast<int>(c * kSubPerChunk - 8 * g);
      const __m256i idx = SB == 32 ? _mm256_set1_epi32(lane)
                                   : _mm256_setr_epi32(lane, lane, lane, lane, lane + 1, lane + 1, lane + 1, lane + 1);
      for (int t = 0; t < NT; ++t) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.tq(t0 + t) + 32 * c));
        const __m256i p16 = SIGNED ? _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(q, w)) : _mm256_maddubs_epi16(w, q);
        const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
        acc[t] = _mm256_fmadd_ps(p, _mm256_permutevar8x32_ps(ss[t], idx), acc[t]);
      }
    }
    for (int t = 0; t < NT; ++t) {
      if constexpr (ASYM)
        acc[t] = _mm256_fmadd_ps(_mm256_loadu_ps(m + 8 * g), _mm256_loadu_ps(a.tX(t0 + t) + 8 * g), acc[t]);
      else if constexpr (!SIGNED)
        acc[t] = _mm256_fmadd_ps(
            ss[t], _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.tcorr(t0 + t) + 8 * g))),
            acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) y[(t0 + t) * ldy] = hsum8(acc[t]);
}

template <int SB, bool ASYM, bool SIGNED>
void dot_row_tokens_avx2(const uint8_t* u, const float* s, const float* m, const Acts& a, int64_t n_tokens, float* y,
                         int64_t ldy) {
  int64_t t = 0;
  for (; t + 4 <= n_tokens; t += 4) dot_row_avx2<SB, ASYM, SIGNED, 4>(u, s, m, a, t, y, ldy);
  switch (n_tokens - t) {
    case 3: dot_row_avx2<SB, ASYM, SIGNED, 3>(u, s, m, a, t, y, ldy); break;
    case 2: dot_row_avx2<SB, ASYM, SIGNED, 2>(u, s, m, a, t, y, ldy); break;
    case 1: dot_row_avx2<SB, ASYM, SIGNED, 1>(u, s, m, a, t, y, ldy); break;
    default: break;
  }
}
#endif  // KVSQ_AVX2_QUANT

#if defined(KVSQ_AVX2_QUANT)
// AVX2 float rows (F32/F16/BF16 weights, e.g. attention over the f16 KV cache): blocks of 4 rows
// converted to fp32 once, then a 4-row x 3-token register tile of FMAs over the columns.
inline void row_to_f32_avx2(TensorType type, const uint8_t* row, int64_t cols, float* dst) {
  int64_t c = 0;
  if (type == TensorType::F16)
    for (; c + 8 <= cols; c += 8)
      _mm256_storeu_ps(dst + c, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * c))));
  else if (type == TensorType::F32)
    for (; c + 8 <= cols; c += 8) _mm256_storeu_ps(dst + c, _mm256_loadu_ps(reinterpret_cast<const float*>(row) + c));
  else if (type == TensorType::BF16)
    for (; c + 8 <= cols; c += 8)
      _mm256_storeu_ps(dst + c, _mm256_castsi256_ps(_mm256_slli_epi32(
                                    _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * c))), 16)));
  if (c < cols) {
    std::vector<float> tail(static_cast<size_t>(cols));
    dequantize_row_scalar(type, row, tail.data(), cols);
    for (; c < cols; ++c) dst[c] = tail[static_cast<size_t>(c)];
  }
}

template <int NT>
void float_tile4_avx2(const float* w4, int64_t cp, const float* x, int64_t cols, int64_t t0, float* y, int64_t ldy,
                      int nr) {
  __m256 acc[4][NT];
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < NT; ++t) acc[r][t] = _mm256_setzero_ps();
  const int64_t c8 = cols / 8 * 8;
  for (int64_t c = 0; c < c8; c += 8) {
    __m256 xv[NT];
    for (int t = 0; t < NT; ++t) xv[t] = _mm256_loadu_ps(x + (t0 + t) * cols + c);
    for (int r = 0; r < 4; ++r) {
      const __m256 wv = _mm256_loadu_ps(w4 + r * cp + c);
      for (int t = 0; t < NT; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < nr; ++r)
    for (int t = 0; t < NT; ++t) {
      float sum = hsum8(acc[r][t]);
      for (int64_t c = c8; c < cols; ++c) sum += w4[r * cp + c] * x[(t0 + t) * cols + c];
      y[(t0 + t) * ldy + r] = sum;
    }
}

void float_rows_avx2(const WeightMatrix& w, const float* x, int64_t T, float* y, int64_t ldy, int64_t rb, int64_t re) {
  const int64_t cols = w.cols, cp = round_up(cols, 8);
  float* w4 = static_cast<float*>(tl_work.get(bytes_of<float>(4 * cp)));
  for (int64_t r0 = rb; r0 < re; r0 += 4) {
    const int nr = static_cast<int>(std::min<int64_t>(4, re - r0));
    for (int r = 0; r < 4; ++r) {
      if (r < nr)
        row_to_f32_avx2(w.type, w.data + static_cast<size_t>(r0 + r) * w.row_bytes, cols, w4 + r * cp);
      else
        std::memset(w4 + r * cp, 0, static_cast<size_t>(cp) * sizeof(float));
    }
    int64_t t = 0;
    for (; t + 3 <= T; t += 3) float_tile4_avx2<3>(w4, cp, x, cols, t, y + r0, ldy, nr);
    if (T - t == 2) float_tile4_avx2<2>(w4, cp, x, cols, t, y + r0, ldy, nr);
    if (T - t == 1) float_tile4_avx2<1>(w4, cp, x, cols, t, y + r0, ldy, nr);
  }
}
#endif  // KVSQ_AVX2_QUANT

// Token counts from which the panel (prefill) kernels are used instead of row dots. With the
// weights in cache (bench/matmul_bench.cpp, Zen 5, 1 thread) panels win from 2 tokens for the
// 32-element sub-block types and from 4 for Q6_K; but a server's decode step of 2-3 sequences
// streams the weights from memory, where the row dots (prefetched, each row read once for all the
// tokens) win: Qwen2.5-0.5B, 2 sequences, 27 ms per step with panels vs 15 ms with row dots
// (`bench/bench_serving.py --streams 1,2,4,8`, 2026-12-07), even at 4. Below 8 tokens the row
// dots also give each token the logits it gets alone, to the bit (in_groups_of_3), so that a
// server's batch of up to 7 sequences decodes exactly as each would alone. fp32 panels pay off
// from about 8 tokens. (Only the AVX-512 VNNI variant has panel kernels.)
[[maybe_unused]] constexpr int64_t kQuantPanelMinTokens = 8;
[[maybe_unused]] constexpr int64_t kQ6KPanelMinTokens = 8;
[[maybe_unused]] constexpr int64_t kFloatPanelMinTokens = 8;

[[maybe_unused]] inline bool takes_panels(MatmulPath path, int64_t T, int64_t min_tokens) {
  return path == MatmulPath::Panels || (path == MatmulPath::ByCount && T >= min_tokens);
}

void validate(const WeightMatrix& w, const char* what) {
  const auto layout = block_layout(w.type);
  if (layout.elems == 0) throw_unsupported(w.type, what);
  if (w.rows < 0 || w.cols < 0)
    throw Error(std::string(what) + ": negative weight shape " + std::to_string(w.rows) + "x" + std::to_string(w.cols));
  if (w.cols % layout.elems != 0)
    throw Error(std::string(what) + ": " + std::to_string(w.cols) + " columns is not a multiple of the " +
                type_label(w.type) + " block size " + std::to_string(layout.elems));
  const size_t need = static_cast<size_t>(w.cols / layout.elems) * layout.bytes;
  if (w.row_bytes < need)
    throw Error(std::string(what) + ": row_bytes " + std::to_string(w.row_bytes) + " is less than the " +
                std::to_string(need) + " bytes of a " + type_label(w.type) + " row of " + std::to_string(w.cols));
  if (w.rows > 0 && w.cols > 0 && w.data == nullptr) throw Error(std::string(what) + ": weight data is null");
}

// Contiguous share [begin, end) of n items for thread `id` of `nth`.
inline void split(int64_t n, int id, int nth, int64_t& begin, int64_t& end) {
  begin = n * id / nth;
  end = n * (id + 1) / nth;
}

// Hands out contiguous ranges of `total` items, `chunk` at a time, to whichever thread asks next.
// Dynamic rather than a static split: on a shared machine a thread that loses its core for a
// while would otherwise hold up the whole call; on an idle machine it costs one atomic per chunk.
struct WorkQueue {
  std::atomic<int64_t> next{0};
  int64_t total, chunk;
  WorkQueue(int64_t total_, int64_t chunk_) : total(total_), chunk(std::max<int64_t>(1, chunk_)) {}
  bool get(int64_t& begin, int64_t& end) {
    begin = next.fetch_add(chunk, std::memory_order_relaxed);
    if (begin >= total) return false;
    end = std::min(total, begin + chunk);
    return true;
  }
};
// Row chunk for the row-dot paths: about 8 chunks per thread, a multiple of 4, at least 16 rows.
// A decode step (few tokens) reads the weights from memory once: one contiguous chunk per thread
// then, so that each thread's reads are one stream for the prefetchers (as the panel path does).
inline int64_t row_chunk(int64_t rows, int nth, int64_t tokens) {
  if (tokens < 16) return std::max<int64_t>(4, round_up((rows + nth - 1) / nth, 4));
  return std::max<int64_t>(16, round_up(rows / (8 * static_cast<int64_t>(nth)) + 1, 4));
}

inline int threads_for(double work) {
  const int maxt = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (work < 2.0e5) return 1;  // not worth waking threads
  return std::max(1, maxt);
}

#if defined(KVSQ_AVX512VNNI)
// The unpacked panel path's buffers for a group of panels: codes P, scales S, biases M of each.
struct PanelGroupBuffers {
  uint8_t* P[kPanelGroup];
  float* S[kPanelGroup];
  float* M[kPanelGroup];
  static size_t bytes(const Acts& a) {
    return kPanelGroup * (bytes_of<uint8_t>(16 * a.kp) + 2 * bytes_of<float>(16 * a.nsp));
  }
  PanelGroupBuffers(Carver& wc, const Acts& a) {
    for (int g = 0; g < kPanelGroup; ++g) {
      P[g] = wc.take<uint8_t>(16 * a.kp);
      S[g] = wc.take<float>(16 * a.nsp);
      M[g] = wc.take<float>(16 * a.nsp);
    }
  }
};

// From this many tokens a panel copy is expanded once per product into the unpacked panels' buffers
// (Qwen2.5-0.5B prefill, Zen 5: re-expanding the codes for every tile of 8 tokens cost ~5%).
constexpr int64_t kPanelExpandMinTokens = 16;
constexpr int64_t kPanelCopyNT = 8;  // tokens per tile of panels::tile_any (a server step of 8 sequences: one tile)

// Weights packed in panels of 16 rows at load time (kernels/panel_packing.h): one kernel for every
// token count, so a token gets the same numbers alone, in a decode batch or in a prompt chunk.
void matmul_panel_packed(const WeightMatrix& w, const QuantKind& k, const float* x, int64_t T, float* y, int64_t ldy) {
  const int64_t cols = w.cols, rows = w.rows;
  Acts a;
  a.kp = round_up(cols, 64);
  a.nsub = cols / k.sb;
  a.nsp = round_up(a.nsub, 16);
  Carver ac{static_cast<uint8_t*>(
      tl_act.get(bytes_of<int8_t>(T * a.kp) + bytes_of<float>(T * a.nsp) + bytes_of<int32_t>(T * a.nsp)))};
  a.take(ac, k, T);
  const panels::Acts pa{a.q, a.kp, a.dxs, a.corr, a.X, a.nsp};
  const int64_t units = cols / panel_unit_cols(w.type);
  const size_t panel_bytes = static_cast<size_t>(units) * panel_unit_bytes(w.type);
  const int nth = threads_for(static_cast<double>(rows) * static_cast<double>(cols) * static_cast<double>(T));
  WorkQueue panels_q((rows + 15) / 16, kPanelGroup);
#pragma omp parallel num_threads(nth)
  {
    const int id = omp_get_thread_num(), n = omp_get_num_threads();
    int64_t tb, te;
    split(T, id, n, tb, te);
    for (int64_t t = tb; t < te; ++t) quantize_token(x + t * cols, cols, k, false, a, t);
#pragma omp barrier
    int64_t p0, pe;
    if (T < kPanelExpandMinTokens) {
      // Decode steps read the weights from memory once: each thread takes one contiguous share of
      // the panels, so that its reads are one stream the prefetchers follow (panels handed out
      // by a queue interleave the threads every group: Qwen2.5-0.5B decode 97-106 -> 110-148
      // tok/s on a Zen 5).
      int64_t s0, s1;
      split((rows + 15) / 16, id, n, s0, s1);
      for (p0 = s0; p0 < s1; p0 += kPanelGroup) {
        pe = std::min(s1, p0 + kPanelGroup);
        for (int64_t t0 = 0; t0 < T; t0 += kPanelCopyNT) {  // each panel's 16 x 8 tile, the group's panels from L1/L2
          const int nt = static_cast<int>(std::min<int64_t>(kPanelCopyNT, T - t0));
          for (int64_t p = p0; p < pe; ++p) {
            const int nr = static_cast<int>(std::min<int64_t>(16, rows - 16 * p));
            panels::tile_any(w.type, nt, w.panels + static_cast<size_t>(p) * panel_bytes, units, pa, t0, y + 16 * p, ldy,
                             static_cast<__mmask16>((1u << nr) - 1));
          }
        }
      }
    } else {
      // Prompts: each panel expanded once into the unpacked panel path's buffers, then the same
      // lane tiles over every token tile (the same numbers, as the tile above gives).
      Carver wc{static_cast<uint8_t*>(tl_work.get(PanelGroupBuffers::bytes(a)))};
      const PanelGroupBuffers buf(wc, a);
      const auto& P = buf.P;
      const auto& S = buf.S;
      const auto& M = buf.M;
      while (panels_q.get(p0, pe)) {
        for (int64_t p = p0; p < pe; ++p)
          panels::expand_panel_any(w.type, w.panels + static_cast<size_t>(p) * panel_bytes, units, P[p - p0], S[p - p0],
                                   M[p - p0]);
        __mmask16 rmask[kPanelGroup];
        for (int64_t p = p0; p < pe; ++p)
          rmask[p - p0] = static_cast<__mmask16>((1u << std::min<int64_t>(16, rows - 16 * p)) - 1);
        for (int64_t t0 = 0; t0 < T; t0 += kLaneNT)
          lane_tiles(k, static_cast<int>(pe - p0), P, S, M, rmask, static_cast<int>(std::min<int64_t>(kLaneNT, T - t0)), a, t0,
                     y + 16 * p0, ldy);
      }
    }
  }
}
#endif

// ------------------------------------------------------------------------------------------------
void matmul_quant(const WeightMatrix& w, const float* x, int64_t T, float* y, int64_t ldy, bool portable, MatmulPath path) {
  QuantKind k{};
  quant_kind(w.type, k);
  const int64_t cols = w.cols, rows = w.rows;
#if defined(KVSQ_AVX512VNNI)
  if (!portable && w.panels != nullptr && panel_packable(w.type)) return matmul_panel_packed(w, k, x, T, y, ldy);
  const bool is_packed = !portable && w.packed != nullptr && packable(w.type);
  const uint8_t* wdata = is_packed ? w.packed : w.data;
  const UnpackFn unpack = portable ? nullptr : is_packed ? packed_unpacker(w.type) : unpacker(w.type);
  const bool panel = !portable && takes_panels(path, T, k.sb == 16 ? kQ6KPanelMinTokens : kQuantPanelMinTokens);
  // The packed row kernels read each token's codes interleaved (kernels/matmul_packed.h).
  const bool row_packed = is_packed && !panel;
  const int64_t qi_stride = row_packed ? packed::interleaved_bytes(cols / 32) : 0;
#else
  (void)path;
  const uint8_t* wdata = w.data;  // only the VNNI kernels read packed rows
  const UnpackFn unpack = portable ? nullptr : unpacker(w.type);
  const bool panel = false, row_packed = false;
  const int64_t qi_stride = 0;
#if !defined(KVSQ_AVX2_QUANT)
  portable = true;
#endif
#endif
#if defined(KVSQ_AMX)
  const bool amx = panel && T >= amx::kMinTokens;
#else
  const bool amx = false;
#endif
  // The AMX tiles read blocks of 16 tokens: the activations get zero tokens up to a multiple of 16.
  const int64_t Tp = amx ? round_up(T, 16) : T;
  Acts a;
  a.kp = round_up(cols, 64);
  a.nsub = cols / k.sb;
  a.nsp = round_up(a.nsub, 16);
#if defined(KVSQ_AVX512VNNI)
  const bool want_c64 = !k.asym && !panel && !portable;  // the VNNI row-dot kernels' correction layout
#else
  const bool want_c64 = false;
#endif
  const size_t per_sub = k.asym ? bytes_of<float>(Tp * a.nsp) : bytes_of<int32_t>(Tp * a.nsp);
  const size_t act_bytes = bytes_of<int8_t>(Tp * a.kp) + bytes_of<float>(Tp * a.nsp) + per_sub +
                           (want_c64 ? bytes_of<int32_t>(T * a.kp / 64 * 16) : 0) +
                           (amx ? 2 * bytes_of<float>(Tp * a.nsp) : 0) + (row_packed ? bytes_of<int8_t>(T * qi_stride) : 0);
  Carver ac{static_cast<uint8_t*>(tl_act.get(act_bytes))};
  a.take(ac, k, Tp);
  if (want_c64) a.c64 = ac.take<int32_t>(T * a.kp / 64 * 16);
  [[maybe_unused]] int8_t* qi = row_packed ? ac.take<int8_t>(T * qi_stride) : nullptr;
  // For the AMX tiles, per block of 16 tokens: dx (and X) of every sub-block as [nsp][16].
  [[maybe_unused]] float* dxT = amx ? ac.take<float>(Tp * a.nsp) : nullptr;
  [[maybe_unused]] float* XT = amx && k.asym ? ac.take<float>(Tp * a.nsp) : nullptr;

  const int nth = threads_for(static_cast<double>(rows) * static_cast<double>(cols) * static_cast<double>(T));
  WorkQueue rows_q(rows, row_chunk(rows, nth, T));
#if defined(KVSQ_AVX512VNNI)
  WorkQueue panels_q((rows + 15) / 16, kPanelGroup);
#endif
#pragma omp parallel num_threads(nth)
  {
    const int id = omp_get_thread_num(), n = omp_get_num_threads();
    int64_t tb, te;
    split(T, id, n, tb, te);
    for (int64_t t = tb; t < te; ++t) {
      quantize_token(x + t * cols, cols, k, want_c64, a, t);
#if defined(KVSQ_AVX512VNNI)
      if (row_packed) packed::interleave_token(a.tq(t), cols / 32, qi + t * qi_stride);
#endif
    }
#if defined(KVSQ_AMX)
    if (amx) {
      if (id == n - 1 && Tp > T) {  // zero tokens: no codes, no scale (the tiles read no corr)
        std::memset(a.q + T * a.kp, 0, static_cast<size_t>((Tp - T) * a.kp));
        std::fill(a.dxs + T * a.nsp, a.dxs + Tp * a.nsp, 0.0f);
        if (k.asym) std::fill(a.X + T * a.nsp, a.X + Tp * a.nsp, 0.0f);
      }
#pragma omp barrier
      int64_t bb, be;
      split(Tp / 16, id, n, bb, be);
      const size_t ld = 4 * static_cast<size_t>(a.nsp);
      for (int64_t b = bb; b < be; ++b) {
        const int64_t o = 16 * b * a.nsp;
        transpose_rows16(reinterpret_cast<const uint8_t*>(a.dxs + o), ld, a.nsp, reinterpret_cast<uint8_t*>(dxT + o));
        if (k.asym)
          transpose_rows16(reinterpret_cast<const uint8_t*>(a.X + o), ld, a.nsp, reinterpret_cast<uint8_t*>(XT + o));
      }
    }
#endif
#pragma omp barrier
    if (!panel) {
      // Row dots: unpack one row, dot it with every token.
      // Unpack buffers for 4 rows (u, s, m of row i at u4 + i*kp, s4 + i*nsp, m4 + i*nsp); the
      // padding past cols / nsub stays zero.
      Carver wc{static_cast<uint8_t*>(tl_work.get(bytes_of<uint8_t>(4 * a.kp) + 2 * bytes_of<float>(4 * a.nsp)))};
      uint8_t* u4 = wc.take<uint8_t>(4 * a.kp);
      float* s4 = wc.take<float>(4 * a.nsp);
      float* m4 = wc.take<float>(4 * a.nsp);
      std::memset(u4, 0, static_cast<size_t>(4 * a.kp));
      std::memset(s4, 0, static_cast<size_t>(4 * a.nsp) * sizeof(float));
      std::memset(m4, 0, static_cast<size_t>(4 * a.nsp) * sizeof(float));
      uint8_t* u = u4;
      float* s = s4;
      float* m = m4;
      int64_t rb, re;
      while (rows_q.get(rb, re)) {
        int64_t r = rb;
#if defined(KVSQ_AVX512VNNI)
        if (row_packed) {
          const packed::Acts pa{qi, qi_stride, a.dxs, a.corr, a.nsp};
          for (; r + 4 <= re; r += 4) {
            const uint8_t* rows = wdata + static_cast<size_t>(r) * w.row_bytes;
            const uint8_t* next = rows + kDecodePrefetchRows * w.row_bytes;
            for (int64_t t0 = 0; t0 < T; t0 += 4) {
              const auto run = [&](auto nt) {
                constexpr int NT = decltype(nt)::value;
                switch (w.type) {
                  case TensorType::Q4_0: return packed::dot_rows4<TensorType::Q4_0, NT>(rows, w.row_bytes, cols / 32, pa, t0, y + r, ldy, next);
                  case TensorType::Q5_0: return packed::dot_rows4<TensorType::Q5_0, NT>(rows, w.row_bytes, cols / 32, pa, t0, y + r, ldy, next);
                  default: return packed::dot_rows4<TensorType::Q8_0, NT>(rows, w.row_bytes, cols / 32, pa, t0, y + r, ldy, next);
                }
              };
              switch (std::min<int64_t>(4, T - t0)) {
                case 1: run(std::integral_constant<int, 1>{}); break;
                case 2: run(std::integral_constant<int, 2>{}); break;
                case 3: run(std::integral_constant<int, 3>{}); break;
                default: run(std::integral_constant<int, 4>{}); break;
              }
            }
          }
        } else if (!portable) {
          // Four rows at a time (decode: one sequence, or a server step of a few).
          for (; r + 4 <= re; r += 4) {
            const uint8_t* rows = w.data + static_cast<size_t>(r) * w.row_bytes;
            const bool in_place = w.type == TensorType::Q4_0 || w.type == TensorType::Q5_0 || w.type == TensorType::Q8_0;
            if (!in_place)
              for (int i = 0; i < 4; ++i) {
                prefetch_bytes(rows + (kDecodePrefetchRows + i) * w.row_bytes, w.row_bytes);
                unpack(rows + i * w.row_bytes, cols, u4 + i * a.kp, s4 + i * a.nsp, m4 + i * a.nsp);
              }
            in_groups_of_3(T, [&](auto nt, int64_t t0) {
              constexpr int NT = decltype(nt)::value;
              switch (w.type) {
                case TensorType::Q4_0: return dot_rows4_direct<TensorType::Q4_0, NT>(rows, w.row_bytes, cols, a, t0, y + r, ldy);
                case TensorType::Q5_0: return dot_rows4_direct<TensorType::Q5_0, NT>(rows, w.row_bytes, cols, a, t0, y + r, ldy);
                case TensorType::Q8_0: return dot_rows4_direct<TensorType::Q8_0, NT>(rows, w.row_bytes, cols, a, t0, y + r, ldy);
                default: break;
              }
              if (k.sb == 16) dot_rows4<16, false, NT>(u4, s4, m4, a, t0, y + r, ldy);
              else if (k.asym) dot_rows4<32, true, NT>(u4, s4, m4, a, t0, y + r, ldy);
              else dot_rows4<32, false, NT>(u4, s4, m4, a, t0, y + r, ldy);
            });
          }
        }
#endif
        for (; r < re; ++r) {  // the last rows of the matrix (packed or not, unpacked first)
          const uint8_t* row = wdata + static_cast<size_t>(r) * w.row_bytes;
          if (portable) {
            unpack_scalar(w.type, row, cols, u, s, m);
            for (int64_t t = 0; t < T; ++t) y[t * ldy + r] = dot_unpacked_scalar(u, s, m, k, a, t, cols);
            continue;
          }
          prefetch_bytes(row + kDecodePrefetchRows * w.row_bytes, w.row_bytes);
          unpack(row, cols, u, s, m);
#if defined(KVSQ_AVX512VNNI)
          if (k.sb == 16)
            dot_row_tokens<16, false>(u, s, m, a, T, y + r, ldy);
          else if (k.asym)
            dot_row_tokens<32, true>(u, s, m, a, T, y + r, ldy);
          else
            dot_row_tokens<32, false>(u, s, m, a, T, y + r, ldy);
#elif defined(KVSQ_AVX2_QUANT)
          if (k.sb == 16)
            dot_row_tokens_avx2<16, false, false>(u, s, m, a, T, y + r, ldy);
          else if (k.asym)
            dot_row_tokens_avx2<32, true, false>(u, s, m, a, T, y + r, ldy);
          else if (w.type == TensorType::Q8_0)
            dot_row_tokens_avx2<32, false, true>(u, s, m, a, T, y + r, ldy);
          else
            dot_row_tokens_avx2<32, false, false>(u, s, m, a, T, y + r, ldy);
#endif
        }
      }
    }
#if defined(KVSQ_AVX512VNNI)
    else {
      // Panels of 16 rows, in groups of kPanelGroup sharing each token tile.
      const size_t rows_bytes = bytes_of<uint8_t>(16 * a.kp) + 2 * bytes_of<float>(16 * a.nsp);
      Carver wc{static_cast<uint8_t*>(tl_work.get(PanelGroupBuffers::bytes(a) + rows_bytes))};
      const PanelGroupBuffers buf(wc, a);
      const auto& P = buf.P;
      const auto& S = buf.S;
      const auto& M = buf.M;
      uint8_t* ru = wc.take<uint8_t>(16 * a.kp);
      float* rs = wc.take<float>(16 * a.nsp);
      float* rm = wc.take<float>(16 * a.nsp);
#if defined(KVSQ_AMX)
      if (amx) {
        if (k.sb == 16)
          amx::configure<16>();
        else
          amx::configure<32>();
      }
#endif
      int64_t p0, pe;
      while (panels_q.get(p0, pe)) {
        const int np = static_cast<int>(pe - p0);
        for (int g = 0; g < np; ++g) {
          const int64_t r0 = (p0 + g) * 16;
          const int nr = static_cast<int>(std::min<int64_t>(16, rows - r0));
          for (int r = 0; r < 16; ++r) {
            uint8_t* u = ru + r * a.kp;
            float* s = rs + r * a.nsp;
            float* m = rm + r * a.nsp;
            if (r < nr) {
              // A few rows ahead: at 8-32 tokens the panels wait on memory, not on arithmetic.
              if (r0 + r + kPanelPrefetchRows < rows)
                prefetch_bytes(wdata + static_cast<size_t>(r0 + r + kPanelPrefetchRows) * w.row_bytes, w.row_bytes);
              unpack(wdata + static_cast<size_t>(r0 + r) * w.row_bytes, cols, u, s, m);
              std::memset(u + cols, 0, static_cast<size_t>(a.kp - cols));
              for (int64_t j = a.nsub; j < a.nsp; ++j) s[j] = m[j] = 0.0f;
            } else {
              std::memset(u, 0, static_cast<size_t>(a.kp));
              for (int64_t j = 0; j < a.nsp; ++j) s[j] = m[j] = 0.0f;
            }
          }
          // codes: 4-byte groups as 32-bit elements; kp/4 is a multiple of 16.
          transpose_rows16(ru, static_cast<size_t>(a.kp), a.kp / 4, P[g]);
#if defined(KVSQ_AMX)
          if (amx && !k.asym) amx::to_signed_codes(P[g], 16 * a.kp, k.off);
#endif
          transpose_rows16(reinterpret_cast<const uint8_t*>(rs), 4 * static_cast<size_t>(a.nsp), a.nsp,
                           reinterpret_cast<uint8_t*>(S[g]));
          if (k.asym)
            transpose_rows16(reinterpret_cast<const uint8_t*>(rm), 4 * static_cast<size_t>(a.nsp), a.nsp,
                             reinterpret_cast<uint8_t*>(M[g]));
        }
#if defined(KVSQ_AMX)
        if (amx) {
          for (int64_t t0 = 0; t0 < T; t0 += 16) {
            const int nt = static_cast<int>(std::min<int64_t>(16, T - t0));
            const int64_t o = t0 * a.nsp;
            for (int g = 0; g < np; ++g) {
              const int64_t r0 = (p0 + g) * 16;
              const int nr = static_cast<int>(std::min<int64_t>(16, rows - r0));
              const __mmask16 rmask = static_cast<__mmask16>((1u << nr) - 1);
              float* yb = y + t0 * ldy + r0;
              if (k.sb == 16)
                amx::panel_tile<16, false>(P[g], S[g], M[g], a.nsub, a.tq(t0), a.kp, dxT + o, XT, yb, ldy, nt, rmask);
              else if (k.asym)
                amx::panel_tile<32, true>(P[g], S[g], M[g], a.nsub, a.tq(t0), a.kp, dxT + o, XT + o, yb, ldy, nt,
                                          rmask);
              else
                amx::panel_tile<32, false>(P[g], S[g], M[g], a.nsub, a.tq(t0), a.kp, dxT + o, XT, yb, ldy, nt, rmask);
            }
          }
          continue;
        }
#endif
        __mmask16 rmask[kPanelGroup];
        for (int g = 0; g < np; ++g) rmask[g] = static_cast<__mmask16>((1u << std::min<int64_t>(16, rows - (p0 + g) * 16)) - 1);
        for (int64_t t0 = 0; t0 < T; t0 += kLaneNT)
          lane_tiles(k, np, P, S, M, rmask, static_cast<int>(std::min<int64_t>(kLaneNT, T - t0)), a, t0, y + p0 * 16, ldy);
      }
#if defined(KVSQ_AMX)
      if (amx) amx::release();
#endif
    }
#endif
  }
}

void matmul_float(const WeightMatrix& w, const float* x, int64_t T, float* y, int64_t ldy, bool portable, MatmulPath path) {
  const int64_t cols = w.cols, rows = w.rows;
#if defined(KVSQ_AVX512VNNI)
  const bool panel = !portable && takes_panels(path, T, kFloatPanelMinTokens);
#elif defined(KVSQ_AVX2_QUANT)
  const bool panel = false;
  (void)path;
#else
  const bool panel = false;
  (void)path;
  portable = true;
#endif
  const int nth = threads_for(static_cast<double>(rows) * static_cast<double>(cols) * static_cast<double>(T));
  WorkQueue rows_q(rows, row_chunk(rows, nth, T));
  WorkQueue panels_q((rows + 15) / 16, 1);
#pragma omp parallel num_threads(nth)
  {
    if (!panel) {
      float* buf = portable ? static_cast<float*>(tl_work.get(bytes_of<float>(cols))) : nullptr;
      int64_t rb, re;
      while (rows_q.get(rb, re)) {
        int64_t r = rb;
#if defined(KVSQ_AVX2_QUANT)
        if (!portable) {
          float_rows_avx2(w, x, T, y, ldy, rb, re);
          continue;
        }
#endif
#if defined(KVSQ_AVX512VNNI)
        // Each token as in a one-token call (the 4 rows stay in L1 across the tokens), so that a
        // decode step of several sequences gives each its own numbers.
        if (!portable)
          for (; r + 4 <= re; r += 4) {
            const uint8_t* row = w.data + static_cast<size_t>(r) * w.row_bytes;
            for (int64_t t = 0; t < T; ++t) {
              const float* xt = x + t * cols;
              float* yt = y + t * ldy + r;
              if (w.type == TensorType::F32)
                float_dot_rows4<TensorType::F32>(row, w.row_bytes, xt, cols, yt);
              else if (w.type == TensorType::F16)
                float_dot_rows4<TensorType::F16>(row, w.row_bytes, xt, cols, yt);
              else
                float_dot_rows4<TensorType::BF16>(row, w.row_bytes, xt, cols, yt);
            }
          }
#endif
        for (; r < re; ++r) {
          const uint8_t* row = w.data + static_cast<size_t>(r) * w.row_bytes;
          if (portable) {
            dequantize_row_scalar(w.type, row, buf, cols);
            for (int64_t t = 0; t < T; ++t) {
              float acc = 0.0f;
              for (int64_t c = 0; c < cols; ++c) acc += buf[c] * x[t * cols + c];
              y[t * ldy + r] = acc;
            }
            continue;
          }
#if defined(KVSQ_AVX512VNNI)
          if (w.type == TensorType::F32)
            float_dot_row_tokens<TensorType::F32>(row, x, cols, T, y + r, ldy);
          else if (w.type == TensorType::F16)
            float_dot_row_tokens<TensorType::F16>(row, x, cols, T, y + r, ldy);
          else
            float_dot_row_tokens<TensorType::BF16>(row, x, cols, T, y + r, ldy);
#endif
        }
      }
    }
#if defined(KVSQ_AVX512VNNI)
    else {
      const int64_t cp = round_up(cols, 16);
      Carver wc{static_cast<uint8_t*>(tl_work.get(2 * bytes_of<float>(16 * cp)))};
      float* PF = wc.take<float>(16 * cp);
      float* rowsf = wc.take<float>(16 * cp);
      int64_t p, pe;
      while (panels_q.get(p, pe)) {
        const int64_t r0 = p * 16;
        const int nr = static_cast<int>(std::min<int64_t>(16, rows - r0));
        for (int r = 0; r < 16; ++r) {
          float* dst = rowsf + r * cp;
          if (r < nr) {
            dequantize_row(w.type, w.data + static_cast<size_t>(r0 + r) * w.row_bytes, dst, cols);
            std::memset(dst + cols, 0, static_cast<size_t>(cp - cols) * 4);
          } else {
            std::memset(dst, 0, static_cast<size_t>(cp) * 4);
          }
        }
        transpose_rows16(reinterpret_cast<const uint8_t*>(rowsf), 4 * static_cast<size_t>(cp), cp,
                         reinterpret_cast<uint8_t*>(PF));
        const __mmask16 rmask = static_cast<__mmask16>((1u << nr) - 1);
        for (int64_t t0 = 0; t0 < T; t0 += kFloatNT) {
          const int nt = static_cast<int>(std::min<int64_t>(kFloatNT, T - t0));
          float_tile_n(nt, PF, x, cols, t0, y + r0, ldy, rmask);
        }
      }
    }
#endif
  }
}

std::atomic<bool> g_exact_activations{false};

void matmul_impl(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy, bool portable,
                 MatmulPath path) {
  validate(w, "matmul");
  if (n_tokens < 0) throw Error("matmul: negative n_tokens " + std::to_string(n_tokens));
  if (ldy < w.rows && n_tokens > 1)
    throw Error("matmul: ldy " + std::to_string(ldy) + " < rows " + std::to_string(w.rows));
  if (n_tokens == 0 || w.rows == 0) return;
  if (w.cols == 0) {
    for (int64_t t = 0; t < n_tokens; ++t)
      for (int64_t r = 0; r < w.rows; ++r) y[t * ldy + r] = 0.0f;
    return;
  }
  QuantKind k{};
  if (quant_kind(w.type, k) && g_exact_activations.load(std::memory_order_relaxed)) {
    // Reference mode: fp32 activations against the dequantized weights. Large matrices (the
    // LM head) are dequantized a row at a time rather than whole.
    if (w.rows * w.cols > (int64_t{1} << 24)) {
#pragma omp parallel
      {
        std::vector<float> row(static_cast<size_t>(w.cols));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < w.rows; ++r) {
          dequantize_row(w.type, w.data + static_cast<size_t>(r) * w.row_bytes, row.data(), w.cols);
          for (int64_t t = 0; t < n_tokens; ++t) {
            const float* xt = x + t * w.cols;
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int64_t c = 0; c < w.cols; ++c) sum += row[static_cast<size_t>(c)] * xt[c];
            y[t * ldy + r] = sum;
          }
        }
      }
      return;
    }
    std::vector<float> dense(static_cast<size_t>(w.rows * w.cols));
    for (int64_t r = 0; r < w.rows; ++r)
      dequantize_row(w.type, w.data + static_cast<size_t>(r) * w.row_bytes, dense.data() + r * w.cols, w.cols);
    WeightMatrix f = w;
    f.type = TensorType::F32;
    f.data = reinterpret_cast<const uint8_t*>(dense.data());
    f.row_bytes = static_cast<size_t>(w.cols) * sizeof(float);
    matmul_float(f, x, n_tokens, y, ldy, portable, path);
  } else if (quant_kind(w.type, k))
    matmul_quant(w, x, n_tokens, y, ldy, portable, path);
  else
    matmul_float(w, x, n_tokens, y, ldy, portable, path);
}

}  // namespace

void matmul_portable(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy) {
  matmul_impl(w, x, n_tokens, y, ldy, true, MatmulPath::ByCount);
}

}  // namespace detail

void set_exact_activations(bool exact) { detail::g_exact_activations.store(exact); }

void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy, MatmulPath path) {
  detail::matmul_impl(w, x, n_tokens, y, ldy, false, path);
}

void get_row(const WeightMatrix& w, int64_t row, float* dst) {
  detail::validate(w, "get_row");
  if (row < 0 || row >= w.rows)
    throw Error("get_row: row " + std::to_string(row) + " out of range [0, " + std::to_string(w.rows) + ")");
  dequantize_row(w.type, w.data + static_cast<size_t>(row) * w.row_bytes, dst, w.cols);
}

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
