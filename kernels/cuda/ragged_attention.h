#pragma once
// Attention of a block of queries over the ragged runs of one layer on the device (split-K flash
// decoding): one thread block per (query, KV head, split of the keys) handles the KV head's
// whole group of query heads, so each key and value row is read once per query; partial softmax
// states are then combined per (query, head). Never materialises a score matrix.
#include <cuda_runtime_api.h>

#include "kernels/cuda/launch.h"

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/ragged_runs.h"

namespace kvsqueeze::kernels::cuda::inline KVSQ_CUDA_FLAVOR {

struct AttentionArgs {
  int32_t n_head = 0;     // query heads; head h reads run h / (n_head / runs.count)
  float scale = 1.0f;     // multiplies q.k
  int32_t window = 0;     // > 0: a query at p sees slots at p' with p - p' < window
};

// The splits of the keys a call with these sizes uses, and the scratch floats it needs.
int64_t attention_splits(int64_t n_q, int64_t n_head_kv, int64_t max_len, int sm_count);
size_t attention_scratch_floats(int64_t n_q, int64_t n_head, int64_t splits, int64_t head_dim_v);

// q: n_q rows of n_head x head_dim_k floats at positions q_pos (device); a query sees the slots
// whose position is <= its own (and within the window). out: n_q rows of n_head x head_dim_v.
// lse (optional): n_q x n_head log-sum-exp of each row's scaled scores (-inf: no visible slot).
// max_len: the longest run. scratch: attention_scratch_floats(...) floats.
cudaError_t attention(const AttentionArgs& args, const RunTable& runs, const float* q, const int32_t* q_pos, int64_t n_q,
                      int64_t max_len, int sm_count, float* out, float* lse, float* scratch, cudaStream_t stream);

}  // namespace kvsqueeze::kernels::cuda::inline KVSQ_CUDA_FLAVOR
