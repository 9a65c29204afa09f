#pragma once
// Dequantization of GGUF blocks to fp32, bit-exact with the GGML reference (gguf-py).
#include <cstdint>

#include "kernels/variant.h"
#include "kvsqueeze/tensor_type.h"

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {

// n must be a multiple of the type's block size; throws kvsqueeze::Error for unsupported types.
void dequantize_row(TensorType type, const void* src, float* dst, int64_t n);

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
