#include "kernels/gcc_intrinsics_warnings.h"  // first: before any intrinsics header
#include "kernels/divergence.h"

#include <algorithm>
#include <cmath>

#include "kernels/vec_math.h"

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {

double log_sum_exp(const float* x, int64_t n) {
  const float m = max_of(x, n);
  double sum = 0.0;
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 shift = _mm512_set1_ps(m);
  // Float lanes summed per block of 4096, then into double: 262K terms lose nothing visible.
  while (i + 16 <= n) {
    __m512 acc = _mm512_setzero_ps();
    const int64_t end = std::min(n - 15, i + 4096);
    for (; i < end; i += 16) acc = _mm512_add_ps(acc, exp_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), shift)));
    sum += _mm512_reduce_add_ps(acc);
  }
#endif
  for (; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - m);
  return m + std::log(sum);
}

double kl_divergence_logits(const float* p, double lse_p, const float* q, double lse_q, int64_t n) {
  double sum = 0.0;
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 shift = _mm512_set1_ps(static_cast<float>(lse_p));
  while (i + 16 <= n) {
    __m512 acc = _mm512_setzero_ps();
    const int64_t end = std::min(n - 15, i + 4096);
    for (; i < end; i += 16) {
      const __m512 pv = _mm512_loadu_ps(p + i);
      const __m512 prob = exp_ps(_mm512_sub_ps(pv, shift));
      acc = _mm512_fmadd_ps(prob, _mm512_sub_ps(pv, _mm512_loadu_ps(q + i)), acc);
    }
    sum += _mm512_reduce_add_ps(acc);
  }
#endif
  for (; i < n; ++i) sum += std::exp(static_cast<double>(p[i]) - lse_p) * (static_cast<double>(p[i]) - q[i]);
  return sum + (lse_q - lse_p);
}

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
