#pragma once
// A load-time copy of Q4_0 / Q5_0 / Q8_0 weight rows in a block-interleaved layout that the
// AVX-512 VNNI row-dot kernels read faster than GGUF's own (kernels/matmul_packed.h). Same bytes per
// row as the GGUF row; knows nothing of models.
//
// A row's blocks of 32 go in groups of up to 16 (n = 16, or what is left for the last group); a
// group's bytes start where its first block's would in the GGUF row. "Chunk" c (0..7) of a group is
// elements 4c..4c+3 of each of its n blocks, 4n bytes (one 512-bit lane per block):
//   u16 scale[n]                          the blocks' f16 scales
//   Q5_0 only: the 5th bits, 8 x 4n bits  chunk c's bits from bit 4n*c, bit 4l+j for block l's
//                                         element 4c+j (a bit stream, little-endian)
//   codes: Q8_0  8 chunks of 4n bytes     q + 128 (unsigned)
//          Q4_0/Q5_0  4 x 4n bytes        byte 4l+j of pair p: chunk p's nibble low, chunk p+4's high
// So one masked 512-bit load (plus a shift and an AND for nibbles) gives chunk c of all 16 blocks,
// and a row's integer dot products over a whole group accumulate in one register, lane l = block
// l, before any float work.
#include <cstddef>
#include <cstdint>

#include "kvsqueeze/tensor_type.h"

namespace kvsqueeze::kernels {

constexpr int64_t kPackedGroupBlocks = 16;  // blocks per group: one 32-bit lane each of a 512-bit register

// Q4_0, Q5_0 and Q8_0.
bool packable(TensorType t);
// The types whose packed rows the kernels read faster (measured, bench/decode_step_bench.cpp):
// Q4_0 and Q5_0. Q8_0's GGUF-layout row kernel already streams one token at the bandwidth bound
// and its packed rows were slower there, so it stays as it is.
bool packing_pays(TensorType t);

// Writes the packed copy of w's rows (w.rows * w.row_bytes bytes) to out. w.type must be packable
// and w's rows exactly as long as its blocks (row_bytes = cols / 32 * block bytes).
void pack_weights(const WeightMatrix& w, uint8_t* out);

// Element e (0..cols) of a packed row, dequantized (the tests check the layout with it).
float packed_weight(TensorType t, const uint8_t* packed_row, int64_t cols, int64_t e);

}  // namespace kvsqueeze::kernels
