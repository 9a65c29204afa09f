#include "kernels/gcc_intrinsics_warnings.h"  // first: before any intrinsics header
#include "kernels/ops.h"

#include "kernels/vec_math.h"

#include <algorithm>
#include <cmath>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {

void rms_norm(const float* x, const float* w, float* out, int64_t n, float eps) {
  double sum = 0.0;  // double: long rows of large activations lose precision in float
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(n) + eps));
  if (w) {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale;
  }
}

void rms_norm_rows(const float* x, const float* w, float* out, int64_t rows, int64_t n, float eps) {
  for (int64_t r = 0; r < rows; ++r) rms_norm(x + r * n, w, out + r * n, n, eps);
}

void rope_tables(const int32_t* pos, int64_t n, const float* inv_freq, int64_t d, float* cos_out, float* sin_out) {
  const int64_t half = d / 2;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const float theta = static_cast<float>(pos[t]) * inv_freq[i];  // fp32 product, as HF computes it
      cos_out[t * half + i] = std::cos(theta);
      sin_out[t * half + i] = std::sin(theta);
    }
}

void rope_apply(float* x, int64_t d, const float* cos, const float* sin, RopeStyle style) {
  const int64_t half = d / 2;
  if (style == RopeStyle::Neox) {
    for (int64_t i = 0; i < half; ++i) {
      const float x0 = x[i], x1 = x[i + half];
      x[i] = x0 * cos[i] - x1 * sin[i];
      x[i + half] = x0 * sin[i] + x1 * cos[i];
    }
    return;
  }
  for (int64_t i = 0; i < half; ++i) {
    const float x0 = x[2 * i], x1 = x[2 * i + 1];
    x[2 * i] = x0 * cos[i] - x1 * sin[i];
    x[2 * i + 1] = x0 * sin[i] + x1 * cos[i];
  }
}

void silu_mul(float* gate, const float* up, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  // The tail goes through the same vector formula (masked): an element's value must not depend on
  // where it sits in the array, or a row of a batched step would differ from the row alone.
  const __m512 one = _mm512_set1_ps(1.0f);
  for (; i < n; i += 16) {
    const __mmask16 m = first_lanes16(n - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 sig = _mm512_div_ps(one, _mm512_add_ps(one, exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g))));
    _mm512_mask_storeu_ps(gate + i, m, _mm512_mul_ps(_mm512_mul_ps(g, sig), _mm512_maskz_loadu_ps(m, up + i)));
  }
#endif
  for (; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void gelu_tanh_mul(float* gate, const float* up, int64_t n) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  int64_t i = 0;
#if defined(__AVX512F__)
  // 0.5 g (1 + tanh(y)) = g * sigmoid(2y), which needs one exp.
  const __m512 one = _mm512_set1_ps(1.0f), c = _mm512_set1_ps(-2.0f * kSqrt2OverPi), c3 = _mm512_set1_ps(0.044715f);
  for (; i < n; i += 16) {  // masked tail, as in silu_mul
    const __mmask16 m = first_lanes16(n - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 inner = _mm512_mul_ps(c, _mm512_fmadd_ps(_mm512_mul_ps(c3, g), _mm512_mul_ps(g, g), g));
    const __m512 sig = _mm512_div_ps(one, _mm512_add_ps(one, exp_ps(inner)));
    _mm512_mask_storeu_ps(gate + i, m, _mm512_mul_ps(_mm512_mul_ps(g, sig), _mm512_maskz_loadu_ps(m, up + i)));
  }
#endif
  for (; i < n; ++i) {
    const float g = gate[i];
    gate[i] = 0.5f * g * (1.0f + std::tanh(kSqrt2OverPi * (g + 0.044715f * g * g * g))) * up[i];
  }
}

void add_inplace(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void scale_inplace(float* x, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  const float m = max_of(x, n);
  const float inv = 1.0f / exp_shift_sum(x, n, m);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
