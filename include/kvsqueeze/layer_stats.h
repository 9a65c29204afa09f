#pragma once
// Statistics a compression method can ask the forward pass for, per layer and chunk. Only what
// is requested is computed; none of it is an L x L matrix.
#include <cstdint>
#include <functional>
#include <vector>

#include "kvsqueeze/attention_probabilities.h"

namespace kvsqueeze {

class KvCache;

struct StatsRequest {
  int64_t window_queries = 0;       // attention probabilities of the chunk's last w queries (1: TOVA)
  // ... of every prefill chunk's last w queries, not only the last chunk's (compressing after
  // every chunk, or a press whose triggers() fires before the last chunk). Off, a long prefill
  // computes the windows once: they cost as much as the chunk's attention again.
  bool window_every_chunk = false;
  bool column_sums = false;         // per query head, the attention each slot received (H2O)
  int64_t pre_rope_query_rows = 0;  // pre-RoPE queries (after q_norm) of the chunk's last N tokens
  bool hidden_states = false;       // the normed attention inputs of the chunk's tokens
  bool token_ids = false;           // the chunk's token ids (presses that re-feed the context: KVzip)
  bool any() const { return window_queries > 0 || column_sums || pre_rope_query_rows > 0 || hidden_states || token_ids; }
};
// What two requests need together (composed presses, shared prefills).
StatsRequest union_of(const StatsRequest& a, const StatsRequest& b);

struct LayerStats {
  int64_t layer = 0;
  bool last_chunk = true;          // the last chunk of the current eval() call
  std::vector<int32_t> positions;  // of the chunk's tokens
  // Probabilities over each KV head's run as it was when the chunk attended (chunk included).
  Probabilities attention;
  int64_t pre_rope_rows = 0;
  std::vector<float> pre_rope_queries;  // pre_rope_rows x n_head x head_dim_k (the chunk's last rows)
  std::vector<float> hidden_states;     // chunk rows x n_embd, when requested
  std::vector<int32_t> tokens;          // the chunk's token ids, when requested
  // Set on views a wrapper scores as a context of their own (chunk(parity=true), as kvpress's
  // ChunkPress): presses with context statistics (expected_attention) compute them from these
  // rows only, with the future positions counted from the view's start.
  bool standalone = false;
};

// Called right after a layer's attention, with that layer's statistics and the cache, so a
// press can compress the layer at once (as kvpress does in its forward hook).
using LayerHook = std::function<void(const LayerStats& stats, KvCache& cache)>;

// ||v|| of every slot of one run (value-norm weighted scorers).
std::vector<float> value_norms(const KvCache& cache, int64_t layer, int64_t head);

}  // namespace kvsqueeze
