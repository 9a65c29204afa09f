#pragma once
// Matrix products against GGUF weight matrices of any supported type. Knows nothing of models.
#include <cstddef>
#include <cstdint>

#include "kernels/variant.h"
#include "kvsqueeze/tensor_type.h"

namespace kvsqueeze::kernels {

using kvsqueeze::WeightMatrix;  // public: include/kvsqueeze/tensor_type.h

// Which of matmul's two paths computes the tokens. A token's result depends only on its own
// activations and on the path, never on the other tokens of the call, so a batched forward pass
// gives every sequence the numbers it gets alone by asking for the path its own pass takes.
//   ByCount: the decode (row-dot) path below 8 tokens, the prefill (panel) path from 8 on.
//   Rows:    the decode path whatever the count (a batch of decode tokens: each is a one-token call).
//   Panels:  the prefill path whatever the count (prompt chunks, so that where a prompt is cut into
//            chunks does not change its numbers). Variants without panel kernels use rows.
enum class MatmulPath : uint8_t { ByCount, Rows, Panels };

}  // namespace kvsqueeze::kernels

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {

// y[t * ldy + r] = sum_c x[t * cols + c] * W[r][c] for t < n_tokens, r < rows.
// Parallel over OpenMP threads (the caller sets the thread count). Chooses the decode
// (quantized-activation dot products) or prefill (tiled GEMM) path by `path`.
void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy, MatmulPath path);
inline void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy) {
  matmul(w, x, n_tokens, y, ldy, MatmulPath::ByCount);
}
inline void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y) {
  matmul(w, x, n_tokens, y, w.rows);
}

// Reference mode for comparisons with fp32 frameworks: quantized weights are dequantized and
// multiplied with fp32 activations (slower) instead of 8-bit quantized activations. Process-wide.
void set_exact_activations(bool exact);

// Dequantized copy of row `row` into dst[cols] (embedding lookup).
void get_row(const WeightMatrix& w, int64_t row, float* dst);

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
