#pragma once
// Attention of a block of queries over per-KV-head runs of cached keys and values.
// Works on any set of kept slots: visibility is decided by the slots' original positions,
// which must be ascending within a run. Never materialises an L x L matrix.
#include <cstdint>
#include <vector>

#include "kernels/variant.h"
#include "kvsqueeze/attention_probabilities.h"
#include "kvsqueeze/kv_run.h"

namespace kvsqueeze::kernels {

// The run and statistics types are public (the cache, LayerStats and the backend seam use them).
using kvsqueeze::AttentionShape;
using kvsqueeze::KvType;
using kvsqueeze::KvRun;
using kvsqueeze::Probabilities;
using kvsqueeze::ProbabilityRequest;

}  // namespace kvsqueeze::kernels

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {

// q: n_q rows of n_head*head_dim_k floats; q_pos: their positions; runs: n_head_kv runs.
// out: n_q rows of n_head*head_dim_v floats. A query sees slots with pos <= its own position.
// lse (optional): n_q x n_head log-sum-exp of each row's scaled scores, for attention_probabilities.
void attention(const AttentionShape& shape, const float* q, const int32_t* q_pos, int64_t n_q,
               const KvRun* runs, float* out, float* lse = nullptr);

// Fills `out` as `request` asks, given the lse of attention() for the same arguments.
void attention_probabilities(const AttentionShape& shape, const float* q, const int32_t* q_pos, int64_t n_q,
                             const KvRun* runs, const float* lse, const ProbabilityRequest& request, Probabilities& out);

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
