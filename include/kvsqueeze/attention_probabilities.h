#pragma once
// Attention probabilities a compression method may ask the forward pass for (LayerStats),
// computed from the scores again in a second pass, never as an n_q x L matrix; and the shape of
// one layer's attention. Shared by the backend seam and the kernels below it.
#include <cstdint>
#include <vector>

namespace kvsqueeze {

struct AttentionShape {
  int64_t n_head = 0;     // query heads
  int64_t n_head_kv = 0;  // KV heads; query head q uses KV head q / (n_head / n_head_kv)
  int64_t head_dim_k = 0;
  int64_t head_dim_v = 0;
  float scale = 1.0f;     // multiplies q.k
  int32_t window = 0;     // > 0: a query at p sees keys at p' with p - p' < window (sliding layers)
};

// The probabilities asked for, from the scores again in a second pass (exp(s - lse)).
struct ProbabilityRequest {
  int64_t window_rows = 0;   // of the last window_rows queries over every slot
  bool column_sums = false;  // per query head, summed over the chunk's queries
  bool any() const { return window_rows > 0 || column_sums; }
};

struct Probabilities {
  int64_t window_rows = 0;
  // [query head] -> window_rows x run length (slots a query cannot see are 0).
  std::vector<std::vector<float>> window;
  // [query head] -> run length.
  std::vector<std::vector<float>> column_sums;
};

}  // namespace kvsqueeze
