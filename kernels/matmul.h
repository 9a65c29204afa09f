#pragma once
// Matrix products against GGUF weight matrices of any supported type. Knows nothing of models.
#include <cstddef>
#include <cstdint>

#include "kernels/variant.h"
#include "kvsqueeze/tensor_type.h"

namespace kvsqueeze::kernels {

using kvsqueeze::WeightMatrix;  // public: include/kvsqueeze/tensor_type.h

}  // namespace kvsqueeze::kernels

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {

// y[t * ldy + r] = sum_c x[t * cols + c] * W[r][c] for t < n_tokens, r < rows.
// Parallel over OpenMP threads (the caller sets the thread count). Chooses the decode
// (quantized-activation dot products) or prefill (tiled GEMM) path by n_tokens.
void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy);
inline void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y) {
  matmul(w, x, n_tokens, y, w.rows);
}

// Reference mode for comparisons with fp32 frameworks: quantized weights are dequantized and
// multiplied with fp32 activations (slower) instead of 8-bit quantized activations. Process-wide.
void set_exact_activations(bool exact);

// Dequantized copy of row `row` into dst[cols] (embedding lookup).
void get_row(const WeightMatrix& w, int64_t row, float* dst);

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
