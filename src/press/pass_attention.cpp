#include "press/pass_attention.h"

#include <omp.h>

#include <algorithm>

#include "backend/host_math.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/tensor_type.h"

namespace kvsqueeze {
namespace {

constexpr int64_t kQueryBlock = 128;  // queries per score block: G x 128 x m floats at a time

}  // namespace

void pass_attention(const PassAttentionArgs& a, std::vector<double>& out) {
  const int64_t G = a.G, d = a.head_dim, width = a.hi - a.lo;
  if (a.lo < 0 || a.hi > a.m || width < 0) throw Error("internal: pass_attention's aggregated slots are out of range");
  if (static_cast<int64_t>(out.size()) != G * width) throw Error("internal: pass_attention's output has the wrong size");
  if (a.n == 0 || a.m == 0 || width == 0) return;
  // The keys as a float "weight matrix": scores = (scale q) . keys^T through the fp32 matmul.
  const WeightMatrix keys{TensorType::F32, reinterpret_cast<const uint8_t*>(a.keys), a.m, d,
                          static_cast<size_t>(d) * sizeof(float)};
  const int64_t nb = std::min(kQueryBlock, a.n);
  std::vector<float> qs(static_cast<size_t>(nb * G * d)), scores(static_cast<size_t>(nb * G * a.m));
  const int threads = omp_get_max_threads();
  // Each thread aggregates into its own copy; merged at the end.
  std::vector<std::vector<double>> partial(static_cast<size_t>(threads));
  for (int64_t t0 = 0; t0 < a.n; t0 += nb) {
    const int64_t bn = std::min(nb, a.n - t0);
    for (int64_t t = 0; t < bn; ++t)
      for (int64_t g = 0; g < G; ++g) {
        const float* src = a.q + (t0 + t) * a.q_stride + g * d;
        float* dst = qs.data() + (t * G + g) * d;
        for (int64_t i = 0; i < d; ++i) dst[i] = a.scale * src[i];
      }
    // Slots past the block's last query are hidden from all of it: score only those before.
    const int32_t last_pos = *std::max_element(a.q_pos + t0, a.q_pos + t0 + bn);
    const int64_t mb = std::upper_bound(a.slot_pos, a.slot_pos + a.m, last_pos) - a.slot_pos;
    if (mb == 0) continue;
    WeightMatrix block_keys = keys;
    block_keys.rows = mb;
    host::matmul(block_keys, qs.data(), bn * G, scores.data());
#pragma omp parallel num_threads(threads)
    {
      auto& mine = partial[static_cast<size_t>(omp_get_thread_num())];
      if (mine.empty()) mine.assign(static_cast<size_t>(G * width), 0.0);
#pragma omp for schedule(dynamic, 4)
      for (int64_t r = 0; r < bn * G; ++r) {
        const int64_t t = r / G, g = r % G;
        const int32_t qp = a.q_pos[t0 + t];
        // Visible slots: a contiguous range, the positions being ascending.
        const int64_t vis_hi = std::upper_bound(a.slot_pos, a.slot_pos + mb, qp) - a.slot_pos;
        const int64_t vis_lo = a.window > 0 ? std::upper_bound(a.slot_pos, a.slot_pos + vis_hi, qp - a.window) - a.slot_pos : 0;
        if (vis_hi <= vis_lo) continue;
        float* row = scores.data() + r * mb;
        host::softmax(row + vis_lo, vis_hi - vis_lo);
        const int64_t from = std::max(vis_lo, a.lo), to = std::min(vis_hi, a.hi);
        const double f = a.row_factor ? a.row_factor[t0 + t] : 1.0;
        double* agg = mine.data() + g * width;  // index j - lo
        const float* sf = a.slot_factor ? a.slot_factor + g * width : nullptr;
        for (int64_t j = from; j < to; ++j) {
          double p = row[j];
          if (a.row_factor) p *= f;
          if (sf) p *= sf[j - a.lo];
          double& dst = agg[j - a.lo];
          dst = a.take_max ? std::max(dst, p) : dst + p;
        }
      }
    }
  }
  // Probabilities are >= 0: a max that starts at 0 is the max over the queries that saw the slot.
  for (const auto& mine : partial) {
    if (mine.empty()) continue;
    for (int64_t i = 0; i < G * width; ++i) {
      double& o = out[static_cast<size_t>(i)];
      o = a.take_max ? std::max(o, mine[static_cast<size_t>(i)]) : o + mine[static_cast<size_t>(i)];
    }
  }
}

}  // namespace kvsqueeze
