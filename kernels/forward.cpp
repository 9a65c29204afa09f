#include "kernels/gcc_intrinsics_warnings.h"  // first: before any intrinsics header
// The public kernel functions as seen outside kernels/ (namespace kernels::baseline, see
// kernels/variant.h): each calls the same function of the variant kernels/dispatch.cpp chose.
#include "kernels/attention.h"
#include "kernels/dequantize.h"
#include "kernels/dispatch.h"
#include "kernels/divergence.h"
#include "kernels/kv_rows.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/quant_blocks.h"

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {

void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy, MatmulPath path) {
  active_ops().matmul(w, x, n_tokens, y, ldy, path);
}
void set_exact_activations(bool exact) {  // a mode of every variant, so that switching keeps it
  for (Isa isa : kAllIsas)
    if (isa_runs(isa)) isa_ops(isa).set_exact_activations(exact);
}
void get_row(const WeightMatrix& w, int64_t row, float* dst) { active_ops().get_row(w, row, dst); }

void dequantize_row(TensorType type, const void* src, float* dst, int64_t n) {
  active_ops().dequantize_row(type, src, dst, n);
}

void attention(const AttentionShape& shape, const float* q, const int32_t* q_pos, int64_t n_q, const KvRun* runs,
               float* out, float* lse) {
  active_ops().attention(shape, q, q_pos, n_q, runs, out, lse);
}
void attention_probabilities(const AttentionShape& shape, const float* q, const int32_t* q_pos, int64_t n_q,
                             const KvRun* runs, const float* lse, const ProbabilityRequest& request, Probabilities& out) {
  active_ops().attention_probabilities(shape, q, q_pos, n_q, runs, lse, request, out);
}

void row_to_f32(const void* base, int64_t index, int64_t stride, int64_t d, KvType type, float* dst) {
  active_ops().row_to_f32(base, index, stride, d, type, dst);
}
float dot_row(const float* q, const void* base, int64_t index, int64_t stride, int64_t d, KvType type) {
  return active_ops().dot_row(q, base, index, stride, d, type);
}

void rms_norm(const float* x, const float* w, float* out, int64_t n, float eps) {
  active_ops().rms_norm(x, w, out, n, eps);
}
void rms_norm_rows(const float* x, const float* w, float* out, int64_t rows, int64_t n, float eps) {
  active_ops().rms_norm_rows(x, w, out, rows, n, eps);
}
void rope_tables(const int32_t* pos, int64_t n, const float* inv_freq, int64_t d, float* cos_out, float* sin_out) {
  active_ops().rope_tables(pos, n, inv_freq, d, cos_out, sin_out);
}
void rope_apply(float* x, int64_t d, const float* cos, const float* sin, RopeStyle style) {
  active_ops().rope_apply(x, d, cos, sin, style);
}
void silu_mul(float* gate, const float* up, int64_t n) { active_ops().silu_mul(gate, up, n); }
void gelu_tanh_mul(float* gate, const float* up, int64_t n) { active_ops().gelu_tanh_mul(gate, up, n); }
void add_inplace(float* x, const float* y, int64_t n) { active_ops().add_inplace(x, y, n); }
void scale_inplace(float* x, float s, int64_t n) { active_ops().scale_inplace(x, s, n); }
void softmax(float* x, int64_t n) { active_ops().softmax(x, n); }

double log_sum_exp(const float* x, int64_t n) { return active_ops().log_sum_exp(x, n); }
double kl_divergence_logits(const float* p, double lse_p, const float* q, double lse_q, int64_t n) {
  return active_ops().kl_divergence_logits(p, lse_p, q, lse_q, n);
}

namespace detail {
void dequantize_row_scalar(TensorType type, const void* src, float* dst, int64_t n) {
  active_ops().dequantize_row_scalar(type, src, dst, n);
}
void matmul_portable(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy) {
  active_ops().matmul_portable(w, x, n_tokens, y, ldy);
}
}  // namespace detail

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
