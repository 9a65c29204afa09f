#pragma once
// The entry points of one instruction-set variant of the kernels, as a table of function
// pointers: kernels/variant_ops.cpp fills one per variant, kernels/forward.cpp calls the one
// kernels/dispatch.cpp selected. One field per public kernel function, same signature.
#include <cstdint>

#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kvsqueeze/tensor_type.h"

namespace kvsqueeze::kernels {

struct KernelOps {
  // matmul.h
  void (*matmul)(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy, MatmulPath path);
  void (*set_exact_activations)(bool exact);
  void (*get_row)(const WeightMatrix& w, int64_t row, float* dst);
  // dequantize.h
  void (*dequantize_row)(TensorType type, const void* src, float* dst, int64_t n);
  // attention.h
  void (*attention)(const AttentionShape& shape, const float* q, const int32_t* q_pos, int64_t n_q, const KvRun* runs,
                    float* out, float* lse);
  void (*attention_probabilities)(const AttentionShape& shape, const float* q, const int32_t* q_pos, int64_t n_q,
                                  const KvRun* runs, const float* lse, const ProbabilityRequest& request,
                                  Probabilities& out);
  // kv_rows.h
  void (*row_to_f32)(const void* base, int64_t index, int64_t stride, int64_t d, KvType type, float* dst);
  float (*dot_row)(const float* q, const void* base, int64_t index, int64_t stride, int64_t d, KvType type);
  // ops.h
  void (*rms_norm)(const float* x, const float* w, float* out, int64_t n, float eps);
  void (*rms_norm_rows)(const float* x, const float* w, float* out, int64_t rows, int64_t n, float eps);
  void (*rope_tables)(const int32_t* pos, int64_t n, const float* inv_freq, int64_t d, float* cos_out, float* sin_out);
  void (*rope_apply)(float* x, int64_t d, const float* cos, const float* sin, RopeStyle style);
  void (*silu_mul)(float* gate, const float* up, int64_t n);
  void (*gelu_tanh_mul)(float* gate, const float* up, int64_t n);
  void (*add_inplace)(float* x, const float* y, int64_t n);
  void (*scale_inplace)(float* x, float s, int64_t n);
  void (*softmax)(float* x, int64_t n);
  // divergence.h
  double (*log_sum_exp)(const float* x, int64_t n);
  double (*kl_divergence_logits)(const float* p, double lse_p, const float* q, double lse_q, int64_t n);
  // quant_blocks.h (the scalar reference paths, for tests)
  void (*dequantize_row_scalar)(TensorType type, const void* src, float* dst, int64_t n);
  void (*matmul_portable)(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy);
};

}  // namespace kvsqueeze::kernels
