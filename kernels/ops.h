#pragma once
// Element-wise and row-wise operations of a transformer layer, on fp32 rows.
#include <cstdint>

#include "kernels/variant.h"

namespace kvsqueeze::kernels {

enum class RopeStyle {
  Normal,  // rotate adjacent pairs (x[2i], x[2i+1]): llama.cpp "norm" (llama, mistral)
  Neox,    // rotate (x[i], x[i+d/2]): llama.cpp "neox" (qwen2, qwen3, gemma3)
};

}  // namespace kvsqueeze::kernels

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {

// out[i] = x[i] / rms(x) * w[i]; w may be null (no scale). out may alias x.
void rms_norm(const float* x, const float* w, float* out, int64_t n, float eps);
// Applies rms_norm to `rows` consecutive rows of length n.
void rms_norm_rows(const float* x, const float* w, float* out, int64_t rows, int64_t n, float eps);

// Rotary embedding tables: cos/sin of pos[t] * inv_freq[i] for t < n, i < d/2, row-major.
// inv_freq already includes any frequency scaling. Computed once per chunk, shared by heads.
void rope_tables(const int32_t* pos, int64_t n, const float* inv_freq, int64_t d, float* cos_out, float* sin_out);
// Rotates one head vector x[d] with one row of the tables.
void rope_apply(float* x, int64_t d, const float* cos, const float* sin, RopeStyle style);

void silu_mul(float* gate, const float* up, int64_t n);       // gate = silu(gate) * up
void gelu_tanh_mul(float* gate, const float* up, int64_t n);  // gate = gelu_tanh(gate) * up
void add_inplace(float* x, const float* y, int64_t n);        // x += y
void scale_inplace(float* x, float s, int64_t n);
// Numerically stable softmax in place.
void softmax(float* x, int64_t n);

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
