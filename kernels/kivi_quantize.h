#pragma once
// KIVI's 2-bit asymmetric quantization (jy-yuan/KIVI, "KIVI: A Tuning-Free Asymmetric 2bit
// Quantization for KV Cache"): a group of values x is stored as
//   mn = min x, scale = (max x - mn) / 3, q = round(clamp((x - mn) / scale, 0, 3))
// and reads back as q * scale + mn. scale and mn are kept in f16, and the codes are computed
// from those rounded values (a zero scale gives codes 0), so a value reads back as close as
// the stored parameters allow. Rounding is to nearest, ties to even (torch's round_).
// Codes pack four a byte: element j in bits 2 * (j % 4) of byte j / 4.
// Keys are grouped per channel over 32 slots, values per token over 32 channels (KIVI's
// choice: key outliers sit in fixed channels, value errors must stay within a token).
#include <cstdint>

namespace kvsqueeze::kernels {

// Values, per token: n floats (n a multiple of 32) -> n / 32 blocks of 12 bytes
// {f16 scale, f16 minimum, 8 bytes of codes}; and back.
void quantize_row_kivi2(const float* src, void* dst, int64_t n);
void dequantize_row_kivi2(const void* src, float* dst, int64_t n);

// Keys, per channel: 32 rows of d floats (rows[t * d + c]) -> the group's parameters (d f16
// scales, then d f16 minima; 4d bytes) and 32 code rows of d / 4 bytes, row t at
// codes + t * code_stride.
void quantize_group_kivi2(const float* rows, int64_t d, void* params, uint8_t* codes, int64_t code_stride);
// One key row: its codes (d / 4 bytes) read with its group's parameters.
void dequantize_key_kivi2(const void* params, const uint8_t* codes, float* dst, int64_t d);
// n consecutive key rows of one group (codes rows d / 4 bytes apart) into n x d floats.
void dequantize_keys_kivi2(const void* params, const uint8_t* codes, int64_t n, float* dst, int64_t d);

}  // namespace kvsqueeze::kernels
