#include "runtime/forward_pass.h"

#include <algorithm>

#include "kvsqueeze/error.h"

namespace kvsqueeze {

using backend::Matrix;
using backend::Vector;

void ForwardPass::ensure_scratch(int64_t n) {
  if (n <= scratch_rows_) return;
  auto& b = backend_;
  x_ = b.buffer(n * cfg_.n_embd);
  h_ = b.buffer(n * cfg_.n_embd);
  proj_ = b.buffer(n * cfg_.n_embd);
  q_ = b.buffer(n * cfg_.n_head * cfg_.head_dim_k);
  k_ = b.buffer(n * cfg_.n_head_kv * cfg_.head_dim_k);
  v_ = b.buffer(n * cfg_.n_head_kv * cfg_.head_dim_v);
  att_ = b.buffer(n * cfg_.n_head * cfg_.head_dim_v);
  gate_ = b.buffer(n * cfg_.n_ff);
  up_ = b.buffer(n * cfg_.n_ff);
  for (auto* table : {&rope_cos_global_, &rope_sin_global_, &rope_cos_local_, &rope_sin_local_})
    *table = b.buffer(n * (cfg_.head_dim_k / 2));
  scratch_rows_ = n;
}

void ForwardPass::attention_block(int64_t l, const int32_t* pos, int64_t n, KvCache& cache) {
  project_qkv(l, n);
  attend(l, pos, n, cache, 0);
  output_projection(l, n);
}

void ForwardPass::project_qkv(int64_t l, int64_t n) {
  auto& b = backend_;
  const int64_t D = cfg_.n_embd, dk = cfg_.head_dim_k, Hq = cfg_.n_head, Hkv = cfg_.n_head_kv;
  const bool sliding = cfg_.layer_sliding[static_cast<size_t>(l)];

  b.rms_norm(*x_, n, D, l, Vector::AttnNorm, *h_);
  b.matmul(l, Matrix::Q, *h_, n, *q_, decode_rows_);
  b.matmul(l, Matrix::K, *h_, n, *k_, decode_rows_);
  b.matmul(l, Matrix::V, *h_, n, *v_, decode_rows_);
  b.add_bias(l, Vector::BiasQ, n, *q_);
  b.add_bias(l, Vector::BiasK, n, *k_);
  b.add_bias(l, Vector::BiasV, n, *v_);

  if (cfg_.qk_norm) {
    b.rms_norm(*q_, n * Hq, dk, l, Vector::QNorm, *q_);
    b.rms_norm(*k_, n * Hkv, dk, l, Vector::KNorm, *k_);
  }
  if (request_.pre_rope_query_rows > 0) {  // what query-statistics scorers re-project
    const int64_t rows = std::min(request_.pre_rope_query_rows, n);
    q_pre_rope_.resize(static_cast<size_t>(rows * Hq * dk));
    b.read(*q_, (n - rows) * Hq * dk, rows * Hq * dk, q_pre_rope_.data());
  }
  const auto& cos = sliding ? *rope_cos_local_ : *rope_cos_global_;
  const auto& sin = sliding ? *rope_sin_local_ : *rope_sin_global_;
  b.rope(*q_, n, Hq, cos, sin);
  b.rope(*k_, n, Hkv, cos, sin);
}

void ForwardPass::attend(int64_t l, const int32_t* pos, int64_t n, KvCache& cache, int64_t row) {
  auto& b = backend_;
  const int64_t dk = cfg_.head_dim_k, dv = cfg_.head_dim_v, Hq = cfg_.n_head, Hkv = cfg_.n_head_kv;
  const bool sliding = cfg_.layer_sliding[static_cast<size_t>(l)];
  // This sequence's rows of the step's activations (all of them outside a batch).
  Buffer q = b.view(*q_, row * Hq * dk), k = b.view(*k_, row * Hkv * dk), v = b.view(*v_, row * Hkv * dv);
  Buffer att = b.view(*att_, row * Hq * dv);

  // Keys are cached after RoPE; the chunk then attends to the cache (its past plus itself).
  b.append_kv(cache, l, n, *k, *v, pos);
  backend::AttentionShape shape;
  shape.n_head = Hq;
  shape.n_head_kv = Hkv;
  shape.head_dim_k = dk;
  shape.head_dim_v = dv;
  shape.scale = cfg_.attn_scale;
  shape.window = sliding ? cfg_.sliding_window : 0;
  backend::ProbabilityRequest probs;
  probs.window_rows = last_chunk_ || request_.window_every_chunk ? request_.window_queries : 0;
  probs.column_sums = request_.column_sums;
  Probabilities& kept = stats_[static_cast<size_t>(l)].attention;
  if (!probs.any()) kept = {};  // no earlier chunk's probabilities under this chunk's name
  b.attention(shape, *q, pos, n, cache, l, *att, probs, probs.any() ? &kept : nullptr);
  if (request_.any() || hook_) collect_stats(l, pos, n, cache);
}

void ForwardPass::output_projection(int64_t l, int64_t n) {
  auto& b = backend_;
  const int64_t D = cfg_.n_embd;
  b.matmul(l, Matrix::O, *att_, n, *proj_, decode_rows_);
  if (cfg_.post_norms) b.rms_norm(*proj_, n, D, l, Vector::PostAttnNorm, *proj_);
  b.add(*x_, *proj_, n * D);
}

void ForwardPass::collect_stats(int64_t l, const int32_t* pos, int64_t n, KvCache& cache) {
  LayerStats& st = stats_[static_cast<size_t>(l)];
  st.layer = l;
  st.last_chunk = last_chunk_;
  st.positions.assign(pos, pos + n);
  st.pre_rope_rows = request_.pre_rope_query_rows > 0 ? std::min(request_.pre_rope_query_rows, n) : 0;
  st.pre_rope_queries = q_pre_rope_;
  if (request_.hidden_states) {
    st.hidden_states.resize(static_cast<size_t>(n * cfg_.n_embd));
    backend_.read(*h_, 0, n * cfg_.n_embd, st.hidden_states.data());
  }
  if (request_.token_ids && tokens_) st.tokens.assign(tokens_, tokens_ + n);
  if (hook_) hook_(st, cache);
}

void ForwardPass::ffn_block(int64_t l, int64_t n) {
  auto& b = backend_;
  const int64_t D = cfg_.n_embd, F = cfg_.n_ff;
  b.rms_norm(*x_, n, D, l, Vector::FfnNorm, *h_);
  b.matmul(l, Matrix::Gate, *h_, n, *gate_, decode_rows_);
  b.matmul(l, Matrix::Up, *h_, n, *up_, decode_rows_);
  b.gated_activation(*gate_, *up_, n * F);
  b.matmul(l, Matrix::Down, *gate_, n, *proj_, decode_rows_);
  if (cfg_.post_norms) b.rms_norm(*proj_, n, D, l, Vector::PostFfwNorm, *proj_);
  b.add(*x_, *proj_, n * D);
}

void ForwardPass::run(const int32_t* tokens, const int32_t* pos, int64_t n, KvCache& cache, bool all_rows, float* logits) {
  ensure_scratch(n);
  stats_.resize(static_cast<size_t>(cfg_.n_layer));
  tokens_ = tokens;
  // One token is a decode step; more are a prompt chunk (Backend::matmul computes the two kinds
  // apart, so that a batched pass can give each sequence these same numbers).
  decode_rows_ = n == 1 ? 1 : 0;
  // RoPE tables for this chunk's positions, shared by every head and layer.
  backend_.rope_tables(pos, n, false, *rope_cos_global_, *rope_sin_global_);
  backend_.rope_tables(pos, n, true, *rope_cos_local_, *rope_sin_local_);
  backend_.embed(tokens, n, *x_);
  for (int64_t l = 0; l < cfg_.n_layer; ++l) {
    attention_block(l, pos, n, cache);
    ffn_block(l, n);
  }
  // The LM head is the largest matrix: during prefill only the last row needs it, and chunks
  // before the last need none.
  if (!logits) return;
  const int64_t first = all_rows ? 0 : n - 1;
  backend_.logits(*x_, first, n - first, logits, n - first == 1 ? 1 : 0);
}

void ForwardPass::run_batch(const std::vector<Segment>& segments) {
  if (request_.any() || hook_) throw Error("internal: a batched forward pass computes no statistics and calls no hook");
  batch_tokens_.clear();
  batch_pos_.clear();
  batch_last_rows_.clear();
  // Decode tokens (one-token segments) first: the matmuls compute those rows as one-row products
  // and the prompt chunks' rows as a chunk, each as its sequence's own pass would.
  std::vector<Segment> ordered;
  for (const Segment& s : segments)
    if (s.n == 1) ordered.push_back(s);
  decode_rows_ = static_cast<int64_t>(ordered.size());
  for (const Segment& s : segments)
    if (s.n != 1) ordered.push_back(s);
  std::vector<float*> outputs;  // the segments that want logits (a prompt's last chunk, a decode token)
  for (const Segment& s : ordered) {
    batch_tokens_.insert(batch_tokens_.end(), s.tokens, s.tokens + s.n);
    batch_pos_.insert(batch_pos_.end(), s.pos, s.pos + s.n);
    if (!s.logits) continue;
    batch_last_rows_.push_back(static_cast<int64_t>(batch_tokens_.size()) - 1);
    outputs.push_back(s.logits);
  }
  const int64_t n = static_cast<int64_t>(batch_tokens_.size());
  if (n == 0) return;
  ensure_scratch(n);
  stats_.resize(static_cast<size_t>(cfg_.n_layer));
  tokens_ = batch_tokens_.data();
  backend_.rope_tables(batch_pos_.data(), n, false, *rope_cos_global_, *rope_sin_global_);
  backend_.rope_tables(batch_pos_.data(), n, true, *rope_cos_local_, *rope_sin_local_);
  backend_.embed(batch_tokens_.data(), n, *x_);
  for (int64_t l = 0; l < cfg_.n_layer; ++l) {
    project_qkv(l, n);
    int64_t row = 0;
    for (const Segment& s : ordered) {
      attend(l, s.pos, s.n, *s.cache, row);
      row += s.n;
    }
    output_projection(l, n);
    ffn_block(l, n);
  }
  // Every wanted last row through the LM head together (it is read once too).
  const int64_t count = static_cast<int64_t>(outputs.size());
  if (count == 0) return;
  backend_.gather_rows(*x_, batch_last_rows_.data(), count, cfg_.n_embd, *h_);
  batch_logits_.resize(static_cast<size_t>(count * cfg_.n_vocab));
  backend_.logits(*h_, 0, count, batch_logits_.data(), count);  // each a last row, as alone
  for (int64_t i = 0; i < count; ++i)
    std::copy_n(batch_logits_.data() + i * cfg_.n_vocab, cfg_.n_vocab, outputs[static_cast<size_t>(i)]);
}

}  // namespace kvsqueeze
