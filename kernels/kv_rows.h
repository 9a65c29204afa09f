#pragma once
// Reading cached K/V rows of any element type, and which slots a query position can see.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/attention.h"
#include "kernels/fp16.h"
#include "kernels/matmul.h"
#include "kernels/variant.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {

#if defined(KVSQ_VARIANT_TU)
// Row `index` (stride `stride` elements) of a cached K or V block as d floats.
inline void row_to_f32(const void* base, int64_t index, int64_t stride, int64_t d, KvElement type, float* dst) {
  switch (type) {
    case KvElement::F32: {
      const float* src = static_cast<const float*>(base) + index * stride;
      std::copy(src, src + d, dst);
      return;
    }
    case KvElement::F16: {
      const uint16_t* src = static_cast<const uint16_t*>(base) + index * stride;
      int64_t i = 0;
#if defined(__AVX512F__)
      for (; i + 16 <= d; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
#endif
      for (; i < d; ++i) dst[i] = fp16_to_fp32(src[i]);
      return;
    }
    case KvElement::BF16: {
      const uint16_t* src = static_cast<const uint16_t*>(base) + index * stride;
      for (int64_t i = 0; i < d; ++i) dst[i] = bf16_to_fp32(src[i]);
      return;
    }
  }
}
#else
// Outside kernels/ (presses, value norms) row_to_f32 and dot_row are the selected variant's,
// through the dispatcher (kernels/forward.cpp): presses call them for every cached row.
void row_to_f32(const void* base, int64_t index, int64_t stride, int64_t d, KvElement type, float* dst);
float dot_row(const float* q, const void* base, int64_t index, int64_t stride, int64_t d, KvElement type);
#endif

// Key row `index` of a run as head_dim_k = d floats: channel-pruned runs (KvRun::k_channels)
// scatter their stored channels and leave the pruned ones 0.
inline void key_row_to_f32(const KvRun& run, int64_t index, int64_t d, float* dst) {
  if (!run.k_channels) return row_to_f32(run.k, index, run.k_stride, d, run.type, dst);
  float stored[1024];
  float* buf = run.k_stride <= 1024 ? stored : nullptr;
  std::vector<float> big;
  if (!buf) {
    big.resize(static_cast<size_t>(run.k_stride));
    buf = big.data();
  }
  row_to_f32(run.k, index, run.k_stride, run.k_stride, run.type, buf);
  std::fill(dst, dst + d, 0.0f);
  for (int64_t i = 0; i < run.k_stride; ++i) dst[run.k_channels[i]] = buf[i];
}

// The query channels a run's keys hold: q (head_dim_k floats) gathered to run.k_stride floats
// for channel-pruned runs; q itself otherwise.
inline const float* gather_query(const KvRun& run, const float* q, float* scratch) {
  if (!run.k_channels) return q;
  for (int64_t i = 0; i < run.k_stride; ++i) scratch[i] = q[run.k_channels[i]];
  return scratch;
}

#if defined(KVSQ_VARIANT_TU)
// q . k for one cached row, converting the key on the fly.
inline float dot_row(const float* q, const void* base, int64_t index, int64_t stride, int64_t d, KvElement type) {
#if defined(__AVX512F__)
  if (d % 16 == 0 && type != KvElement::BF16) {
    __m512 acc = _mm512_setzero_ps();
    if (type == KvElement::F16) {
      const uint16_t* k = static_cast<const uint16_t*>(base) + index * stride;
      for (int64_t i = 0; i < d; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i),
                              _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(k + i))), acc);
    } else {
      const float* k = static_cast<const float*>(base) + index * stride;
      for (int64_t i = 0; i < d; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), _mm512_loadu_ps(k + i), acc);
    }
    return _mm512_reduce_add_ps(acc);
  }
#endif
  float sum = 0.0f;
  for (int64_t i = 0; i < d; ++i) {
    float k;
    if (type == KvElement::F32) k = static_cast<const float*>(base)[index * stride + i];
    else if (type == KvElement::F16) k = fp16_to_fp32(static_cast<const uint16_t*>(base)[index * stride + i]);
    else k = bf16_to_fp32(static_cast<const uint16_t*>(base)[index * stride + i]);
    sum += q[i] * k;
  }
  return sum;
}
#endif

// o += p * v_row
inline void axpy_row(float* o, float p, const void* base, int64_t index, int64_t stride, int64_t d, KvElement type) {
#if defined(__AVX512F__)
  if (d % 16 == 0 && type == KvElement::F16) {
    const uint16_t* v = static_cast<const uint16_t*>(base) + index * stride;
    const __m512 pv = _mm512_set1_ps(p);
    for (int64_t i = 0; i < d; i += 16)
      _mm512_storeu_ps(o + i, _mm512_fmadd_ps(pv, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + i))),
                                              _mm512_loadu_ps(o + i)));
    return;
  }
#endif
  if (type == KvElement::F32) {
    const float* v = static_cast<const float*>(base) + index * stride;
    for (int64_t i = 0; i < d; ++i) o[i] += p * v[i];
    return;
  }
  const uint16_t* v = static_cast<const uint16_t*>(base) + index * stride;
  for (int64_t i = 0; i < d; ++i) o[i] += p * (type == KvElement::F16 ? fp16_to_fp32(v[i]) : bf16_to_fp32(v[i]));
}

// Slots [lo, hi) of a run visible to a query at position p (positions ascending).
inline void visible_range(const KvRun& run, int32_t p, int32_t window, int64_t& lo, int64_t& hi) {
  hi = std::upper_bound(run.pos, run.pos + run.len, p) - run.pos;
  lo = 0;
  if (window > 0) lo = std::lower_bound(run.pos, run.pos + hi, p - window + 1) - run.pos;
}

inline size_t elem_bytes(KvElement type) { return type == KvElement::F32 ? 4 : 2; }

// Cached key rows [first, first + n) of a run as the weight matrix of a matmul.
inline WeightMatrix key_rows(const KvRun& run, int64_t first, int64_t n) {
  WeightMatrix keys;
  keys.type = run.type == KvElement::F32 ? TensorType::F32 : run.type == KvElement::F16 ? TensorType::F16 : TensorType::BF16;
  keys.data = static_cast<const uint8_t*>(run.k) + static_cast<size_t>(first * run.k_stride) * elem_bytes(run.type);
  keys.rows = n;
  keys.cols = run.k_stride;
  keys.row_bytes = static_cast<size_t>(run.k_stride) * elem_bytes(run.type);
  return keys;
}

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
