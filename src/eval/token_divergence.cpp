// Per-token divergence of two next-token distributions (KL, target log-prob, top-1).
#include <algorithm>
#include <cmath>

#include "backend/host_math.h"
#include "kvsqueeze/eval/runner.h"

namespace kvsqueeze::eval {

TokenDivergence token_divergence(const float* ref, const float* test, int64_t n, int32_t target) {
  return token_divergence(ref, host::log_sum_exp(ref, n), test, n, target);
}

TokenDivergence token_divergence(const float* ref, double ref_lse, const float* test, int64_t n, int32_t target) {
  const double zt = host::log_sum_exp(test, n);
  TokenDivergence d;
  // Rounding can leave -1e-9 for equal distributions; identical inputs give exactly 0.
  d.kl = std::max(0.0, host::kl_divergence_logits(ref, ref_lse, test, zt, n));
  d.nll_ref = ref_lse - ref[target];
  d.nll_test = zt - test[target];
  d.abs_dlogp = std::abs(d.nll_ref - d.nll_test);
  d.top1_agree = (std::max_element(ref, ref + n) - ref) == (std::max_element(test, test + n) - test);
  return d;
}

}  // namespace kvsqueeze::eval
