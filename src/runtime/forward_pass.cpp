#include "runtime/forward_pass.h"

#include <algorithm>

#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"

namespace kvsqueeze {
namespace {

void add_bias(float* rows, const std::vector<float>& bias, int64_t n) {
  if (bias.empty()) return;
  const int64_t width = static_cast<int64_t>(bias.size());
  for (int64_t t = 0; t < n; ++t) kernels::add_inplace(rows + t * width, bias.data(), width);
}

}  // namespace

void ForwardPass::ensure_scratch(int64_t n) {
  if (n <= scratch_rows_) return;
  const auto rows = static_cast<size_t>(n);
  x_.resize(rows * static_cast<size_t>(cfg_.n_embd));
  h_.resize(x_.size());
  proj_.resize(x_.size());
  q_.resize(rows * static_cast<size_t>(cfg_.n_head * cfg_.head_dim_k));
  k_.resize(rows * static_cast<size_t>(cfg_.n_head_kv * cfg_.head_dim_k));
  v_.resize(rows * static_cast<size_t>(cfg_.n_head_kv * cfg_.head_dim_v));
  att_.resize(rows * static_cast<size_t>(cfg_.n_head * cfg_.head_dim_v));
  gate_.resize(rows * static_cast<size_t>(cfg_.n_ff));
  up_.resize(gate_.size());
  for (auto* table : {&rope_cos_global_, &rope_sin_global_, &rope_cos_local_, &rope_sin_local_})
    table->resize(rows * static_cast<size_t>(cfg_.head_dim_k / 2));
  scratch_rows_ = n;
}

void ForwardPass::attention_block(int64_t l, const int32_t* pos, int64_t n, KvCache& cache) {
  const LayerWeights& L = w_.layers[static_cast<size_t>(l)];
  const int64_t D = cfg_.n_embd, dk = cfg_.head_dim_k, Hq = cfg_.n_head, Hkv = cfg_.n_head_kv;
  const bool sliding = cfg_.layer_sliding[static_cast<size_t>(l)];

  kernels::rms_norm_rows(x_.data(), L.attn_norm.data(), h_.data(), n, D, cfg_.rms_eps);
  kernels::matmul(L.wq, h_.data(), n, q_.data());
  kernels::matmul(L.wk, h_.data(), n, k_.data());
  kernels::matmul(L.wv, h_.data(), n, v_.data());
  add_bias(q_.data(), L.bq, n);
  add_bias(k_.data(), L.bk, n);
  add_bias(v_.data(), L.bv, n);

  const auto& cos = sliding ? rope_cos_local_ : rope_cos_global_;
  const auto& sin = sliding ? rope_sin_local_ : rope_sin_global_;
  const auto style = cfg_.rope_neox ? kernels::RopeStyle::Neox : kernels::RopeStyle::Normal;
  const int64_t half = dk / 2;
  if (cfg_.qk_norm) {
    kernels::rms_norm_rows(q_.data(), L.q_norm.data(), q_.data(), n * Hq, dk, cfg_.rms_eps);
    kernels::rms_norm_rows(k_.data(), L.k_norm.data(), k_.data(), n * Hkv, dk, cfg_.rms_eps);
  }
  if (request_.pre_rope_query_rows > 0) {  // what query-statistics scorers re-project
    const int64_t rows = std::min(request_.pre_rope_query_rows, n);
    q_pre_rope_.assign(q_.begin() + (n - rows) * Hq * dk, q_.begin() + n * Hq * dk);
  }
  for (int64_t t = 0; t < n; ++t) {
    const float* ct = cos.data() + t * half;
    const float* st = sin.data() + t * half;
    float* qt = q_.data() + t * Hq * dk;
    float* kt = k_.data() + t * Hkv * dk;
    for (int64_t h = 0; h < Hq; ++h) kernels::rope_apply(qt + h * dk, dk, ct, st, style);
    for (int64_t h = 0; h < Hkv; ++h) kernels::rope_apply(kt + h * dk, dk, ct, st, style);
  }

  // Keys are cached after RoPE; the chunk then attends to the cache (its past plus itself).
  cache.append(l, n, k_.data(), v_.data(), pos);
  std::vector<kernels::KvRun> runs;
  for (int64_t h = 0; h < Hkv; ++h) runs.push_back(cache.run(l, h));
  kernels::AttentionShape shape;
  shape.n_head = Hq;
  shape.n_head_kv = Hkv;
  shape.head_dim_k = dk;
  shape.head_dim_v = cfg_.head_dim_v;
  shape.scale = cfg_.attn_scale;
  shape.window = sliding ? cfg_.sliding_window : 0;
  const bool want_lse = request_.window_queries > 0 || request_.column_sums;
  if (want_lse) lse_.resize(static_cast<size_t>(n * Hq));
  kernels::attention(shape, q_.data(), pos, n, runs.data(), att_.data(), want_lse ? lse_.data() : nullptr);
  if (request_.any() || hook_) collect_stats(l, pos, n, shape, runs, cache);

  kernels::matmul(L.wo, att_.data(), n, proj_.data());
  if (cfg_.post_norms) kernels::rms_norm_rows(proj_.data(), L.post_attn_norm.data(), proj_.data(), n, D, cfg_.rms_eps);
  kernels::add_inplace(x_.data(), proj_.data(), n * D);
}

void ForwardPass::collect_stats(int64_t l, const int32_t* pos, int64_t n, const kernels::AttentionShape& shape,
                                const std::vector<kernels::KvRun>& runs, KvCache& cache) {
  LayerStats& st = stats_[static_cast<size_t>(l)];
  st.layer = l;
  st.last_chunk = last_chunk_;
  st.positions.assign(pos, pos + n);
  if (request_.window_queries > 0 || request_.column_sums) {
    kernels::ProbabilityRequest pr;
    pr.window_rows = request_.window_queries;
    pr.column_sums = request_.column_sums;
    kernels::attention_probabilities(shape, q_.data(), pos, n, runs.data(), lse_.data(), pr, st.attention);
  }
  st.pre_rope_rows = request_.pre_rope_query_rows > 0 ? std::min(request_.pre_rope_query_rows, n) : 0;
  st.pre_rope_queries = q_pre_rope_;
  if (request_.hidden_states) st.hidden_states.assign(h_.begin(), h_.begin() + n * cfg_.n_embd);
  if (request_.token_ids && tokens_) st.tokens.assign(tokens_, tokens_ + n);
  if (hook_) hook_(st, cache);
}

void ForwardPass::ffn_block(int64_t l, int64_t n) {
  const LayerWeights& L = w_.layers[static_cast<size_t>(l)];
  const int64_t D = cfg_.n_embd, F = cfg_.n_ff;
  kernels::rms_norm_rows(x_.data(), L.ffn_norm.data(), h_.data(), n, D, cfg_.rms_eps);
  kernels::matmul(L.w_gate, h_.data(), n, gate_.data());
  kernels::matmul(L.w_up, h_.data(), n, up_.data());
  if (cfg_.activation == Activation::GeluTanhGated) kernels::gelu_tanh_mul(gate_.data(), up_.data(), n * F);
  else kernels::silu_mul(gate_.data(), up_.data(), n * F);
  kernels::matmul(L.w_down, gate_.data(), n, proj_.data());
  if (cfg_.post_norms) kernels::rms_norm_rows(proj_.data(), L.post_ffw_norm.data(), proj_.data(), n, D, cfg_.rms_eps);
  kernels::add_inplace(x_.data(), proj_.data(), n * D);
}

void ForwardPass::run(const int32_t* tokens, const int32_t* pos, int64_t n, KvCache& cache, bool all_rows, float* logits) {
  ensure_scratch(n);
  stats_.resize(static_cast<size_t>(cfg_.n_layer));
  tokens_ = tokens;
  const int64_t D = cfg_.n_embd;
  // RoPE tables for this chunk's positions, shared by every head and layer.
  kernels::rope_tables(pos, n, w_.inv_freq_global.data(), cfg_.head_dim_k, rope_cos_global_.data(), rope_sin_global_.data());
  kernels::rope_tables(pos, n, w_.inv_freq_local.data(), cfg_.head_dim_k, rope_cos_local_.data(), rope_sin_local_.data());
  for (int64_t t = 0; t < n; ++t) {
    kernels::get_row(w_.token_embd, tokens[t], x_.data() + t * D);
    if (cfg_.embed_scale != 1.0f) kernels::scale_inplace(x_.data() + t * D, cfg_.embed_scale, D);
  }
  for (int64_t l = 0; l < cfg_.n_layer; ++l) {
    attention_block(l, pos, n, cache);
    ffn_block(l, n);
  }
  // The LM head is the largest matrix: during prefill only the last row needs it, and chunks
  // before the last need none.
  if (!logits) return;
  const int64_t first = all_rows ? 0 : n - 1, rows = n - first;
  kernels::rms_norm_rows(x_.data() + first * D, w_.output_norm.data(), h_.data(), rows, D, cfg_.rms_eps);
  kernels::matmul(w_.output, h_.data(), rows, logits);
}

}  // namespace kvsqueeze
