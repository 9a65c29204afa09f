// Reading one cached K/V row (kernels/kv_rows.h), compiled per instruction set.
#include "kernels/kv_rows.h"

#include <algorithm>

#include "kernels/fp16.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {

void row_to_f32(const void* base, int64_t index, int64_t stride, int64_t d, KvElement type, float* dst) {
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

float dot_row(const float* q, const void* base, int64_t index, int64_t stride, int64_t d, KvElement type) {
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

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
