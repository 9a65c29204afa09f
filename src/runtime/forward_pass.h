#pragma once
// The transformer forward pass over one chunk of tokens (llama family and gemma3), written
// against the backend seam: it decides what runs in which order, the backend runs it.
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "kvsqueeze/kv_cache.h"
#include "kvsqueeze/layer_stats.h"
#include "kvsqueeze/model.h"

namespace kvsqueeze {

class ForwardPass {
 public:
  ForwardPass(const Model& model, backend::Backend& backend) : cfg_(model.config()), backend_(backend) {}

  // tokens[n] at positions pos[n]: appends to the cache and writes logits (n_vocab floats per
  // row) for the last token only, or for every token when all_rows is set; none when null.
  void run(const int32_t* tokens, const int32_t* pos, int64_t n, KvCache& cache, bool all_rows, float* logits);

  // One sequence's part of a batched pass: n tokens at positions pos, appended to its own cache,
  // and the logits of its last token (n_vocab floats) written to `logits`.
  struct Segment {
    const int32_t* tokens = nullptr;
    const int32_t* pos = nullptr;
    int64_t n = 0;
    KvCache* cache = nullptr;
    float* logits = nullptr;  // its last row's logits; null: none wanted (a prompt chunk before the last)
  };
  // Several sequences in one pass: the weights are read once for all their rows (one matmul over
  // the concatenated rows), attention runs per sequence over its own cache. No statistics and no
  // layer hook (a sequence whose press acts on this pass runs alone, through run()).
  void run_batch(const std::vector<Segment>& segments);

  void set_stats_request(const StatsRequest& request) { request_ = request; }
  const StatsRequest& stats_request() const { return request_; }
  void set_layer_hook(LayerHook hook) { hook_ = std::move(hook); }
  void set_last_chunk(bool last) { last_chunk_ = last; }
  // Statistics of the last chunk, per layer (empty unless requested).
  const std::vector<LayerStats>& stats() const { return stats_; }

 private:
  using Buffer = std::unique_ptr<backend::Buffer>;
  void ensure_scratch(int64_t n);
  void attention_block(int64_t layer, const int32_t* pos, int64_t n, KvCache& cache);
  // attention_block's parts: norm, Q/K/V projections and RoPE over all n rows; the chunk's keys
  // and values appended and attended (rows from `row` on); the output projection.
  void project_qkv(int64_t layer, int64_t n);
  void attend(int64_t layer, const int32_t* pos, int64_t n, KvCache& cache, int64_t row);
  void output_projection(int64_t layer, int64_t n);
  void collect_stats(int64_t layer, const int32_t* pos, int64_t n, KvCache& cache);
  void ffn_block(int64_t layer, int64_t n);

  const ModelConfig& cfg_;
  backend::Backend& backend_;
  int64_t scratch_rows_ = 0;
  // Activations of the chunk, row-major [n x width], in the backend's memory.
  Buffer x_, h_, q_, k_, v_, att_, proj_, gate_, up_;
  Buffer rope_cos_global_, rope_sin_global_, rope_cos_local_, rope_sin_local_;  // [n x d/2]
  std::vector<float> q_pre_rope_;
  StatsRequest request_;
  LayerHook hook_;
  bool last_chunk_ = true;
  const int32_t* tokens_ = nullptr;  // of the chunk being run (for the token_ids statistic)
  int64_t decode_rows_ = 0;          // leading rows of the pass that are decode tokens (Backend::matmul)
  std::vector<LayerStats> stats_;
  std::vector<int32_t> batch_tokens_, batch_pos_;  // run_batch's rows, concatenated
  std::vector<int64_t> batch_last_rows_;
  std::vector<float> batch_logits_;
};

}  // namespace kvsqueeze
