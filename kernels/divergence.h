#pragma once
// Distances between distributions given as logits (vectorised; evaluation of compressed caches
// compares a 262K-entry vocabulary per token, thousands of times).
#include <cstdint>

#include "kernels/variant.h"

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {

// log sum_i exp(x[i]), stable (shifted by the maximum).
double log_sum_exp(const float* x, int64_t n);
// KL(P || Q) for P = softmax(p), Q = softmax(q), given their log_sum_exp values:
// sum_i P_i (p_i - q_i) + (lse_q - lse_p). Identical inputs give exactly 0.
double kl_divergence_logits(const float* p, double lse_p, const float* q, double lse_q, int64_t n);

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
