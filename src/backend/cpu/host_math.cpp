// The host helpers (src/backend/host_math.h) on the dispatched kernels.
#include "backend/host_math.h"

#include <vector>

#include "kernels/divergence.h"
#include "kernels/dequantize.h"
#include "kernels/fp16.h"
#include "kernels/hadamard.h"
#include "kernels/kv_rows.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"

namespace kvsqueeze::host {

void rope_tables(const int32_t* pos, int64_t n, const float* inv_freq, int64_t d, float* cos_out, float* sin_out) {
  kernels::rope_tables(pos, n, inv_freq, d, cos_out, sin_out);
}
void rope_apply(float* x, int64_t d, const float* cos, const float* sin, RopeStyle style) {
  kernels::rope_apply(x, d, cos, sin, style == RopeStyle::Neox ? kernels::RopeStyle::Neox : kernels::RopeStyle::Normal);
}

void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y) { kernels::matmul(w, x, n_tokens, y); }
void get_row(const WeightMatrix& w, int64_t row, float* dst) { kernels::get_row(w, row, dst); }
void dequantize_row(TensorType type, const void* src, float* dst, int64_t n) { kernels::dequantize_row(type, src, dst, n); }

double log_sum_exp(const float* x, int64_t n) { return kernels::log_sum_exp(x, n); }
void softmax(float* x, int64_t n) { kernels::softmax(x, n); }
double kl_divergence_logits(const float* p, double lse_p, const float* q, double lse_q, int64_t n) {
  return kernels::kl_divergence_logits(p, lse_p, q, lse_q, n);
}

float fp16_to_fp32(uint16_t h) { return kernels::fp16_to_fp32(h); }
float bf16_to_fp32(uint16_t b) { return kernels::bf16_to_fp32(b); }

void key_row(const KvRun& run, int64_t index, int64_t d, float* dst) { kernels::key_row_to_f32(run, index, d, dst); }
void value_row(const KvRun& run, int64_t index, int64_t d, float* dst) {
  kernels::stored_value_row(run, index, dst);
  if (run.v_rotated) kernels::hadamard_rotate(dst, d);
}

float key_dot(const KvRun& run, int64_t index, int64_t d, const float* q) {
  float offset_dot = 0.0f;  // centred keys: q . offset, the part of q.k the stored row lacks
  if (run.k_offset)
    for (int64_t i = 0; i < d; ++i) offset_dot += q[i] * run.k_offset[i];
  // Two rows of scratch: the query as the key is stored (its channels, or rotated), and a key
  // that is no plain row (KIVI2 groups, the recent window).
  float stack[2 * 1024];
  std::vector<float> big;
  float* scratch = stack;
  if (run.k_stride > 1024) scratch = (big.resize(static_cast<size_t>(2 * run.k_stride)), big.data());
  if (run.k_channels || run.k_rotated) q = kernels::gather_query(run, q, scratch);
  if (kernels::key_rows_plain(run, index, 1)) return kernels::dot_row(q, run.k, index, run.k_stride, run.k_stride, run.k_type) + offset_dot;
  float* key = scratch + run.k_stride;
  kernels::stored_key_row(run, index, key);
  float sum = 0.0f;
  for (int64_t i = 0; i < run.k_stride; ++i) sum += q[i] * key[i];
  return sum + offset_dot;
}

}  // namespace kvsqueeze::host
