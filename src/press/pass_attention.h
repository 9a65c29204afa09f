#pragma once
// The attention of a second pass's queries over chosen slots of one KV head, aggregated per query
// head over those queries: what KVzip (max of the repeat queries' probabilities) and KVCompose
// (max or mean over the re-fed context's queries) score a context slot by. The scores come from
// the dispatched fp32 matmul on the gathered keys, the softmax from the dispatched kernel, the
// aggregation split over the threads: no n x L matrix, no scalar exp loop.
#include <cstdint>
#include <vector>

namespace kvsqueeze {

struct PassAttentionArgs {
  // Queries: n rows at q_pos, each holding the G query heads of this KV head (head_dim floats
  // each, RoPE applied) at q + t * q_stride + g * head_dim.
  const float* q = nullptr;
  const int32_t* q_pos = nullptr;
  int64_t n = 0, q_stride = 0, G = 1, head_dim = 0;
  // Slots: m keys (head_dim floats each, rows of `keys`) at ascending positions slot_pos.
  const float* keys = nullptr;
  const int32_t* slot_pos = nullptr;
  int64_t m = 0;
  float scale = 1.0f;  // multiplies q.k
  int32_t window = 0;  // > 0: a query at p sees slots at p' with p - p' < window
  // The aggregated slots: [lo, hi) of the m.
  int64_t lo = 0, hi = 0;
  bool take_max = true;  // max over the queries, or else their sum
  // Optional factors of each probability: per query (n) and per query head and aggregated slot
  // (G x (hi - lo)) (KVzip+'s normalisation).
  const float* row_factor = nullptr;
  const float* slot_factor = nullptr;
};

// out: G x (hi - lo) aggregates, updated (max or +=) in place, so several passes accumulate.
void pass_attention(const PassAttentionArgs& a, std::vector<double>& out);

}  // namespace kvsqueeze
