#pragma once
// The normalised Walsh-Hadamard rotation of cached key rows (QuaRot / llama.cpp's rotated
// quantized KV cache): an orthogonal, symmetric transform, so applying it twice gives the row
// back and q.k == (Hq).(Hk). It spreads a few large channels over the whole block, which keeps
// one outlier from taking a quantization block's whole range. Blocks of the largest power of two
// dividing d (d itself for the usual 64/128/256), so rows of any multiple of 32 work.
#include <cmath>
#include <cstdint>

namespace kvsqueeze::kernels {

inline int64_t hadamard_block(int64_t d) { return d & -d; }  // the largest power of two dividing d

// x (d floats) := H x, in place.
inline void hadamard_rotate(float* x, int64_t d) {
  const int64_t block = hadamard_block(d);
  const float norm = 1.0f / std::sqrt(static_cast<float>(block));
  for (int64_t b = 0; b < d; b += block) {
    float* v = x + b;
    for (int64_t len = 1; len < block; len <<= 1)
      for (int64_t i = 0; i < block; i += len << 1)
        for (int64_t j = i; j < i + len; ++j) {
          const float a = v[j], c = v[j + len];
          v[j] = a + c;
          v[j + len] = a - c;
        }
    for (int64_t i = 0; i < block; ++i) v[i] *= norm;
  }
}

}  // namespace kvsqueeze::kernels
