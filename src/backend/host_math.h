#pragma once
// Numeric helpers on host memory for the code above the backend seam: presses scoring rows a
// view handed them, model loading, evaluation metrics, the CLI. They run on the CPU whatever
// the device (a device backend hands presses host copies), on the same dispatched kernels as
// the CPU backend (src/backend/cpu/host_math.cpp), so results do not depend on who calls.
#include <cstdint>

#include "kvsqueeze/kv_run.h"
#include "kvsqueeze/tensor_type.h"

namespace kvsqueeze::host {

enum class RopeStyle {
  Normal,  // rotate adjacent pairs (x[2i], x[2i+1]): llama.cpp "norm" (llama, mistral)
  Neox,    // rotate (x[i], x[i+d/2]): llama.cpp "neox" (qwen2, qwen3, gemma3)
};
inline RopeStyle rope_style(bool neox) { return neox ? RopeStyle::Neox : RopeStyle::Normal; }
// cos/sin of pos[t] * inv_freq[i] for t < n, i < d/2, row-major.
void rope_tables(const int32_t* pos, int64_t n, const float* inv_freq, int64_t d, float* cos_out, float* sin_out);
// Rotates one head vector x[d] with one row of the tables.
void rope_apply(float* x, int64_t d, const float* cos, const float* sin, RopeStyle style);

// y[t * w.rows + r] = x_t . W_r for n_tokens rows x of w.cols floats.
void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y);
// Dequantized copy of row `row` of w into dst[w.cols].
void get_row(const WeightMatrix& w, int64_t row, float* dst);
void dequantize_row(TensorType type, const void* src, float* dst, int64_t n);

double log_sum_exp(const float* x, int64_t n);
// x = softmax(x) over n floats, in place (max-subtracted, vectorized).
void softmax(float* x, int64_t n);
// KL(p || q) of two logit rows given their log-sum-exps.
double kl_divergence_logits(const float* p, double lse_p, const float* q, double lse_q, int64_t n);

float fp16_to_fp32(uint16_t h);
float bf16_to_fp32(uint16_t b);

// Rows of a host run (KvRun) as floats. key_row: head_dim_k = d floats, channel-pruned runs
// reading 0 in their pruned channels; value_row: d = head_dim_v floats.
void key_row(const KvRun& run, int64_t index, int64_t d, float* dst);
void value_row(const KvRun& run, int64_t index, int64_t d, float* dst);
// q . key `index` of the run (q: head_dim_k = d floats), with the attention kernel's arithmetic
// on the key as stored.
float key_dot(const KvRun& run, int64_t index, int64_t d, const float* q);

}  // namespace kvsqueeze::host
