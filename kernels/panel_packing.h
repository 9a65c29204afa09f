#pragma once
// A load-time copy of Q4_0 / Q5_0 / Q8_0 / Q4_K / Q6_K weights in panels of 16 rows, the order in which the
// AVX-512 VNNI panel kernels consume them (kernels/matmul_panels.h): the codes of 16 rows come
// already transposed, 4 consecutive codes of a row in each 32-bit lane, so that one vpdpbusd
// advances the dot products of 16 rows at once, for a decode token as for a prompt's. The
// unpacking and transposing the panels otherwise do for every product (a third of a server step
// of 8 tokens) is done once. Same bytes per weight as the GGUF rows; knows nothing of models.
//
// Panel p holds rows 16p..16p+15 (the last one padded with zero rows); for each block j of 32
// columns, in order, kPanelBlockBytes(type) bytes:
//   f16 scale[16]                   the 16 rows' block scales
//   codes: Q8_0      8 x 64 bytes   chunk c (0..7): byte 4r+i = q + 128 of row r, element 4c+i
//          Q4_0/Q5_0 4 x 64 bytes   byte 4r+i of pair c (0..3): chunk c's 4-bit code low, chunk
//                                   c+4's high (element 4c+i and 4(c+4)+i of row r)
//   Q5_0 only: 8 x 64 bits          chunk c's fifth bits, bit 4r+i for row r, element 4c+i
// A code is the GGUF value plus the type's offset (Q4_0 8, Q5_0 16, Q8_0 128): unsigned bytes.
// Q4_K goes by super-blocks of 256 columns instead, panel_unit_bytes(Q4_K) bytes each:
//   f16 d[16], f16 dmin[16]         the 16 rows' super-block scales
//   then for each of its 8 blocks of 32 columns:
//     u8 sc[16], u8 mn[16]          the rows' 6-bit block scale and min (w = d sc u - dmin mn)
//     codes 4 x 64 bytes            as Q4_0's (the 4-bit values themselves, no offset)
// The unpacked panels' scales d*sc and mins -(dmin*mn) are recomputed from them exactly.
// Q6_K goes by super-blocks of 256 columns too, panel_unit_bytes(Q6_K) bytes each:
//   f16 d[16]                       the 16 rows' super-block scales
//   i8 sc[16][16]                   sub-block j's (16 columns) signed scale of row r at 16 j + r
//   then for each pair of sub-blocks (32 columns, chunks c = 0..7):
//     codes 4 x 64 bytes            the low 4 bits of the 6-bit values, as Q4_0's
//     highs 2 x 64 bytes            their top 2 bits: chunk c's in vector c / 4, byte 4r+i, bits
//                                   2 (c % 4) and up
// (w = d sc (u - 32): the same bytes as the GGUF rows, 210 per 256 weights.)
#include <cstddef>
#include <cstdint>

#include "kvsqueeze/tensor_type.h"

namespace kvsqueeze::kernels {

constexpr int64_t kPanelRows = 16;
// Q6_K units: where the pairs of sub-blocks start (after d[16] and sc[16][16]) and their size.
constexpr size_t kQ6KPairsAt = 32 + 256;
constexpr size_t kQ6KPairBytes = 256 + 128;

// Q4_0, Q5_0, Q8_0, Q4_K and Q6_K.
bool panel_packable(TensorType t);
// A panel is a run of units: blocks of 32 columns, or Q4_K's and Q6_K's super-blocks of 256.
int64_t panel_unit_cols(TensorType t);
// Bytes of one unit of a panel.
size_t panel_unit_bytes(TensorType t);
// Bytes of w's panel copy: its rows rounded up to 16.
size_t panel_packed_bytes(const WeightMatrix& w);
// Writes w's panel copy to out (panel_packed_bytes(w) bytes). w's rows must be whole blocks, back to back.
void pack_panels(const WeightMatrix& w, uint8_t* out);
// Element (row, col) of a panel copy, dequantized (the tests check the layout with it).
float panel_weight(TensorType t, const uint8_t* panels, int64_t cols, int64_t row, int64_t col);

}  // namespace kvsqueeze::kernels
