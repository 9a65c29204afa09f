// Q8_0: d = max|x| / 127, q = round-half-away(x / d) as int8.
// Q4_0: m = the element of largest magnitude (the first one on ties), d = m / -8,
//       q = min(15, trunc(x / d + 8.5)), two 4-bit values a byte (element j low, j + 16 high).
// Both multiply by the float32 reciprocal 1/d (0 when d is 0), and every product is rounded
// before the following add, as the reference does.
#include "kernels/kv_quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/fp16.h"
#include "kernels/quant_blocks.h"

namespace kvsqueeze::kernels {

namespace {
constexpr int64_t kBlock = 32;

void put_scale(uint8_t* block, float d) {
  const uint16_t h = fp32_to_fp16(d);
  std::memcpy(block, &h, 2);
}
}  // namespace

void quantize_row_q8_0(const float* src, void* dst, int64_t n) {
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / kBlock; ++b, src += kBlock, out += 34) {
    float amax = 0.0f;
    for (int64_t i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(src[i]));
    const float d = amax / 127.0f;
    const float id = d == 0.0f ? 0.0f : 1.0f / d;
    put_scale(out, d);
    for (int64_t i = 0; i < kBlock; ++i) out[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(std::round(src[i] * id)));
  }
}

void quantize_row_q4_0(const float* src, void* dst, int64_t n) {
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / kBlock; ++b, src += kBlock, out += 18) {
    float amax = 0.0f, max = 0.0f;
    for (int64_t i = 0; i < kBlock; ++i)
      if (std::fabs(src[i]) > amax) {
        amax = std::fabs(src[i]);
        max = src[i];
      }
    const float d = max / -8.0f;
    const float id = d == 0.0f ? 0.0f : 1.0f / d;
    put_scale(out, d);
    uint8_t q[kBlock];
    for (int64_t i = 0; i < kBlock; ++i) {
      const float scaled = detail::no_fma(src[i] * id);
      q[i] = static_cast<uint8_t>(std::min(15, static_cast<int>(std::trunc(scaled + 8.5f))));
    }
    for (int64_t i = 0; i < kBlock / 2; ++i) out[2 + i] = static_cast<uint8_t>(q[i] | (q[i + kBlock / 2] << 4));
  }
}

}  // namespace kvsqueeze::kernels
