#pragma once
// GGML tensor element types as numbered in the GGUF format, with their block layout.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace kvsqueeze {

enum class TensorType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  BF16 = 30,
};

struct TensorTypeInfo {
  const char* name;
  int64_t block_size;   // elements per block
  size_t block_bytes;   // bytes per block
  bool supported;       // whether kernels can dequantize / multiply it
};

// Info for a raw GGUF type number; nullopt when the number is not a known GGML type.
std::optional<TensorTypeInfo> tensor_type_info(uint32_t raw_type);
const TensorTypeInfo& tensor_type_info(TensorType type);
std::string tensor_type_name(uint32_t raw_type);
// Bytes of one row of n elements; n must be a multiple of the block size.
size_t tensor_row_bytes(TensorType type, int64_t n);

// A row-major weight matrix as stored in GGUF: `rows` rows of `cols` elements, each row
// `row_bytes` bytes of blocks of `type`.
struct WeightMatrix {
  TensorType type = TensorType::F32;
  const uint8_t* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;
  // Optional: the same rows repacked at load time for the CPU kernels (kernels/weight_packing.h),
  // which read it instead of `data` where they can; `data` stays valid for everything else.
  const uint8_t* packed = nullptr;
  // Optional: the same rows in panels of 16 for the CPU panel kernels (kernels/panel_packing.h),
  // read instead of `data` and `packed` for every product where set.
  const uint8_t* panels = nullptr;
};

}  // namespace kvsqueeze
