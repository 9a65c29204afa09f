#pragma once
// Quantizing cached key and value rows to llama.cpp's Q8_0 and Q4_0 blocks (layouts in
// kernels/quant_blocks.h), bit-exact with the GGML reference as gguf-py writes it
// (gguf.quants.Q8_0/Q4_0.quantize_blocks). Scalar on purpose: a row is quantized once, when it is
// appended, so this is never on a hot path; reading the rows back is kv_rows.h's job.
#include <cstdint>

namespace kvsqueeze::kernels {

// n (a multiple of 32) floats of src -> n / 32 blocks at dst.
void quantize_row_q8_0(const float* src, void* dst, int64_t n);
void quantize_row_q4_0(const float* src, void* dst, int64_t n);

}  // namespace kvsqueeze::kernels
