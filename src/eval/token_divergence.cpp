// Per-token divergence of two next-token distributions (KL, target log-prob, top-1), in double.
#include <algorithm>
#include <cmath>

#include "kvsqueeze/eval/runner.h"

namespace kvsqueeze::eval {
namespace {

// log of the softmax normaliser: log sum exp(x).
double log_normaliser(const float* x, int64_t n) {
  const double m = *std::max_element(x, x + n);
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i]) - m);
  return m + std::log(s);
}

}  // namespace

TokenDivergence token_divergence(const float* ref, const float* test, int64_t n, int32_t target) {
  const double zr = log_normaliser(ref, n), zt = log_normaliser(test, n);
  TokenDivergence d;
  double kl = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double lr = ref[i] - zr, lt = test[i] - zt;
    kl += std::exp(lr) * (lr - lt);
  }
  d.kl = std::max(0.0, kl);  // rounding can leave -1e-12 for equal distributions
  d.nll_ref = zr - ref[target];
  d.nll_test = zt - test[target];
  d.abs_dlogp = std::abs(d.nll_ref - d.nll_test);
  d.top1_agree = (std::max_element(ref, ref + n) - ref) == (std::max_element(test, test + n) - test);
  return d;
}

}  // namespace kvsqueeze::eval
