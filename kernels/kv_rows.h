#pragma once
// Reading cached K/V rows of any element type, and which slots a query position can see.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/attention.h"
#include "kernels/dequantize.h"
#include "kernels/fp16.h"
#include "kernels/hadamard.h"
#include "kernels/matmul.h"
#include "kernels/variant.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {

// The weight type matmul and dequantize_row know a KV element type by.
inline TensorType kv_tensor_type(KvType type) {
  switch (type) {
    case KvType::F32: return TensorType::F32;
    case KvType::F16: return TensorType::F16;
    case KvType::BF16: return TensorType::BF16;
    case KvType::Q8_0: return TensorType::Q8_0;
    case KvType::Q4_0: return TensorType::Q4_0;
  }
  return TensorType::F32;
}

// Row `index` of rows of `stride` elements, as stored.
inline const uint8_t* kv_row_at(const void* base, int64_t index, int64_t stride, KvType type) {
  return static_cast<const uint8_t*>(base) + static_cast<size_t>(index) * kv_row_bytes(type, stride);
}

#if defined(KVSQ_VARIANT_TU)
// Row `index` (rows of `stride` elements) of a cached K or V block as d floats.
inline void row_to_f32(const void* base, int64_t index, int64_t stride, int64_t d, KvType type, float* dst) {
  const uint8_t* row = kv_row_at(base, index, stride, type);
  switch (type) {
    case KvType::F32: {
      const float* src = reinterpret_cast<const float*>(row);
      std::copy(src, src + d, dst);
      return;
    }
    case KvType::F16: {
      const uint16_t* src = reinterpret_cast<const uint16_t*>(row);
      int64_t i = 0;
#if defined(__AVX512F__)
      for (; i + 16 <= d; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
#endif
      for (; i < d; ++i) dst[i] = fp16_to_fp32(src[i]);
      return;
    }
    case KvType::BF16: {
      const uint16_t* src = reinterpret_cast<const uint16_t*>(row);
      for (int64_t i = 0; i < d; ++i) dst[i] = bf16_to_fp32(src[i]);
      return;
    }
    case KvType::Q8_0:
    case KvType::Q4_0: dequantize_row(kv_tensor_type(type), row, dst, d); return;
  }
}
#else
// Outside kernels/ (presses, value norms) row_to_f32 and dot_row are the selected variant's,
// through the dispatcher (kernels/forward.cpp): presses call them for every cached row.
void row_to_f32(const void* base, int64_t index, int64_t stride, int64_t d, KvType type, float* dst);
float dot_row(const float* q, const void* base, int64_t index, int64_t stride, int64_t d, KvType type);
#endif

// Key row `index` of a run as head_dim_k = d floats: channel-pruned runs (KvRun::k_channels)
// scatter their stored channels and leave the pruned ones 0.
inline void key_row_to_f32(const KvRun& run, int64_t index, int64_t d, float* dst) {
  if (!run.k_channels) {
    row_to_f32(run.k, index, run.k_stride, d, run.k_type, dst);
    if (run.k_rotated) hadamard_rotate(dst, d);
    if (run.k_offset)
      for (int64_t i = 0; i < d; ++i) dst[i] += run.k_offset[i];
    return;
  }
  float stored[1024];
  float* buf = run.k_stride <= 1024 ? stored : nullptr;
  std::vector<float> big;
  if (!buf) {
    big.resize(static_cast<size_t>(run.k_stride));
    buf = big.data();
  }
  row_to_f32(run.k, index, run.k_stride, run.k_stride, run.k_type, buf);
  std::fill(dst, dst + d, 0.0f);
  for (int64_t i = 0; i < run.k_stride; ++i) dst[run.k_channels[i]] = buf[i];
}

// The query as the run's keys are stored: q (head_dim_k floats) gathered to run.k_stride floats
// for channel-pruned runs, rotated for rotated ones, q itself otherwise. scratch: k_stride floats.
inline const float* gather_query(const KvRun& run, const float* q, float* scratch) {
  if (run.k_rotated) {
    std::copy(q, q + run.k_stride, scratch);
    hadamard_rotate(scratch, run.k_stride);
    return scratch;
  }
  if (!run.k_channels) return q;
  for (int64_t i = 0; i < run.k_stride; ++i) scratch[i] = q[run.k_channels[i]];
  return scratch;
}

#if defined(KVSQ_VARIANT_TU)
// q . k for one cached row, converting the key on the fly.
inline float dot_row(const float* q, const void* base, int64_t index, int64_t stride, int64_t d, KvType type) {
  const uint8_t* row = kv_row_at(base, index, stride, type);
#if defined(__AVX512F__)
  if (d % 16 == 0 && (type == KvType::F16 || type == KvType::F32)) {
    __m512 acc = _mm512_setzero_ps();
    if (type == KvType::F16) {
      const uint16_t* k = reinterpret_cast<const uint16_t*>(row);
      for (int64_t i = 0; i < d; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i),
                              _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(k + i))), acc);
    } else {
      const float* k = reinterpret_cast<const float*>(row);
      for (int64_t i = 0; i < d; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), _mm512_loadu_ps(k + i), acc);
    }
    return _mm512_reduce_add_ps(acc);
  }
#endif
  float sum = 0.0f;
  if (kv_type_quantized(type)) {
    float k[1024];  // head dimensions are far below this (the cache checks multiples of 32 only)
    for (int64_t c = 0; c < d; c += 1024) {
      const int64_t m = std::min<int64_t>(1024, d - c);
      dequantize_row(kv_tensor_type(type), row + kv_row_bytes(type, c), k, m);
      for (int64_t i = 0; i < m; ++i) sum += q[c + i] * k[i];
    }
    return sum;
  }
  for (int64_t i = 0; i < d; ++i) {
    float k;
    if (type == KvType::F32) k = reinterpret_cast<const float*>(row)[i];
    else if (type == KvType::F16) k = fp16_to_fp32(reinterpret_cast<const uint16_t*>(row)[i]);
    else k = bf16_to_fp32(reinterpret_cast<const uint16_t*>(row)[i]);
    sum += q[i] * k;
  }
  return sum;
}

#endif

// Slots [lo, hi) of a run visible to a query at position p (positions ascending).
inline void visible_range(const KvRun& run, int32_t p, int32_t window, int64_t& lo, int64_t& hi) {
  hi = std::upper_bound(run.pos, run.pos + run.len, p) - run.pos;
  lo = 0;
  if (window > 0) lo = std::lower_bound(run.pos, run.pos + hi, p - window + 1) - run.pos;
}

// Cached key rows [first, first + n) of a run as the weight matrix of a matmul.
inline WeightMatrix key_rows(const KvRun& run, int64_t first, int64_t n) {
  WeightMatrix keys;
  keys.type = kv_tensor_type(run.k_type);
  keys.data = run.k_row(first);
  keys.rows = n;
  keys.cols = run.k_stride;
  keys.row_bytes = kv_row_bytes(run.k_type, run.k_stride);
  return keys;
}

#if defined(KVSQ_VARIANT_TU)
// out[t * ldo + j] = q_t . key row (first + j), for nq query rows of k_stride floats (already
// gathered/rotated as the run stores its keys) and j < n. Float keys are the weights of one
// matmul; quantized keys are dequantized a tile at a time and multiplied with the float queries,
// so the scores carry the keys' rounding only (a quantized matmul would round the queries to 8
// bits as well).
inline void key_scores(const KvRun& run, int64_t first, int64_t n, const float* q, int64_t nq, float* out, int64_t ldo) {
  if (!kv_type_quantized(run.k_type)) return matmul(key_rows(run, first, n), q, nq, out, ldo);
  constexpr int64_t kTile = 256;
  const int64_t d = run.k_stride;
  thread_local std::vector<float> tile;
  tile.resize(static_cast<size_t>(kTile * d));
  for (int64_t j0 = 0; j0 < n; j0 += kTile) {
    const int64_t nt = std::min(kTile, n - j0);
    for (int64_t j = 0; j < nt; ++j) row_to_f32(run.k, first + j0 + j, d, d, run.k_type, tile.data() + j * d);
    WeightMatrix keys;
    keys.type = TensorType::F32;
    keys.data = reinterpret_cast<const uint8_t*>(tile.data());
    keys.rows = nt;
    keys.cols = d;
    keys.row_bytes = static_cast<size_t>(d) * sizeof(float);
    matmul(keys, q, nq, out + j0, ldo);
  }
}
#endif

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
