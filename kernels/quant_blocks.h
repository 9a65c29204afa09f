#pragma once
// Private to kernels/: GGML block layouts (written from the GGUF/GGML format description) and
// small helpers shared by dequantize.cpp and matmul.cpp.
//
// Block layouts (all little-endian, no padding, blocks packed back to back):
//   Q4_0  32 elems, 18 B: f16 d | u8 qs[16]            w[i] = d * ((qs[i%16] >> 4*(i/16)) & 15) - 8)
//   Q4_1  32 elems, 20 B: f16 d | f16 m | u8 qs[16]    w[i] = d * q[i] + m
//   Q5_0  32 elems, 22 B: f16 d | u32 qh | u8 qs[16]   q[i] = nibble | ((qh >> i) & 1) << 4, w = d*(q-16)
//   Q5_1  32 elems, 24 B: f16 d | f16 m | u32 qh | u8 qs[16]                         w = d*q + m
//   Q8_0  32 elems, 34 B: f16 d | i8 qs[32]            w[i] = d * qs[i]
//   Q4_K 256 elems,144 B: f16 d | f16 dmin | u8 scales[12] | u8 qs[128]
//        8 sub-blocks of 32 with 6-bit scale sc_j and min m_j: w = (d*sc_j)*q - (dmin*m_j);
//        sub-blocks 2i and 2i+1 are the low / high nibbles of qs[32i .. 32i+31].
//   Q5_K 256 elems,176 B: f16 d | f16 dmin | u8 scales[12] | u8 qh[32] | u8 qs[128]
//        as Q4_K plus bit j of qh[l] as bit 4 of element l of sub-block j.
//   Q6_K 256 elems,210 B: u8 ql[128] | u8 qh[64] | i8 scales[16] | f16 d
//        16 sub-blocks of 16, w = (d*scales[e/16]) * (q - 32), q 6-bit (see q6k_index below).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "kernels/fp16.h"
#include "kernels/matmul.h"
#include "kernels/variant.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/tensor_type.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
#define KVSQ_AVX512 1
#include <immintrin.h>
#if defined(__AVX512VNNI__)
#define KVSQ_AVX512VNNI 1
#endif
#endif
// Machines without AVX-512 VNNI (AVX2 CPUs, e.g. Zen 2/3) get their own integer row-dot kernels.
#if !defined(KVSQ_AVX512VNNI) && defined(__AVX2__) && defined(__FMA__)
#define KVSQ_AVX2_QUANT 1
#include <immintrin.h>
#endif

namespace kvsqueeze::kernels::inline KVSQ_VARIANT::detail {

constexpr int kQK = 32;    // legacy block
constexpr int kQKK = 256;  // K-quant super-block

struct BlockLayout {
  int64_t elems;  // elements per block
  size_t bytes;   // bytes per block
};

// Layout of the types the kernels implement; elems == 0 for anything else.
inline BlockLayout block_layout(TensorType t) {
  const auto info = tensor_type_info(static_cast<uint32_t>(t));
  if (!info || !info->supported) return {0, 0};
  return {info->block_size, info->block_bytes};
}

inline std::string type_label(TensorType t) { return tensor_type_name(static_cast<uint32_t>(t)); }

[[noreturn]] inline void throw_unsupported(TensorType t, const char* what) {
  throw Error(std::string(what) + ": tensor type " + type_label(t) +
              " is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, "
              "Q5_K, Q6_K)");
}

inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_fp32(h);
}
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Q4_K / Q5_K: 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes.
inline void k_scale_min(const uint8_t* s, int j, int& sc, int& mn) {
  if (j < 4) {
    sc = s[j] & 63;
    mn = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
    mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Q6_K: unsigned 6-bit value (0..63) of element e (0..255) of a block.
inline int q6k_value(const uint8_t* blk, int e) {
  const uint8_t* ql = blk;
  const uint8_t* qh = blk + 128;
  int h = e / 128, c4 = (e / 32) % 4, l = e % 32;
  int lo = (ql[64 * h + (c4 & 1) * 32 + l] >> (4 * (c4 >> 1))) & 15;
  int hi = (qh[32 * h + l] >> (2 * c4)) & 3;
  return lo | (hi << 4);
}

// Keeps a product from being fused into a following add (GCC contracts a*b+c into an FMA
// across statements by default); the GGML reference rounds the product first.
inline float no_fma(float v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+x"(v));
#elif defined(__GNUC__)
  __asm__("" : "+m"(v));
#else
  volatile float t = v;
  v = t;
#endif
  return v;
}

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT::detail

namespace kvsqueeze::kernels::inline KVSQ_VARIANT::detail {
// Portable scalar dequantization (the reference the vector code is checked against; also what
// dequantize_row uses where AVX-512 is unavailable). Same contract as dequantize_row.
// Outside kernels/ (tests) this and matmul_portable run in the selected variant.
void dequantize_row_scalar(TensorType type, const void* src, float* dst, int64_t n);
// matmul() through the portable scalar kernels only (activations quantized the same way);
// the path used where AVX-512 VNNI is unavailable, exposed so tests can check it everywhere.
void matmul_portable(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy);
}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT::detail
