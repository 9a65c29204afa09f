#include "kernels/attention.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/fp16.h"
#include "kernels/kv_rows.h"
#include "kernels/matmul.h"
#include "kernels/vec_math.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace kvsqueeze::kernels {
namespace {

constexpr int64_t kQueryBlock = 64;  // queries per work item in prefill
constexpr int64_t kKeyTile = 128;    // keys converted to fp32 at a time for the GEMM path
size_t elem_bytes(KvElement type) { return type == KvElement::F32 ? 4 : 2; }
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Running state of an online softmax for one query: max, sum of weights, weighted values.
struct OnlineSoftmax {
  float m = kNegInf;
  float l = 0.0f;
};

// Single query, slot range [lo, hi): direct loops, keys converted on the fly.
void attend_one(const AttentionShape& s, const float* q, const KvRun& run, int64_t lo, int64_t hi,
                std::vector<float>& scores, float* o, OnlineSoftmax& st) {
  const int64_t n = hi - lo;
  std::fill(o, o + s.head_dim_v, 0.0f);
  st = OnlineSoftmax{};
  if (n <= 0) return;
  scores.resize(static_cast<size_t>(n));
  float m = kNegInf;
  for (int64_t j = 0; j < n; ++j) {
    scores[static_cast<size_t>(j)] = s.scale * dot_row(q, run.k, lo + j, run.k_stride, s.head_dim_k, run.type);
    m = std::max(m, scores[static_cast<size_t>(j)]);
  }
  const float l = exp_shift_sum(scores.data(), n, m);
  for (int64_t j = 0; j < n; ++j) axpy_row(o, scores[static_cast<size_t>(j)], run.v, lo + j, run.v_stride, s.head_dim_v, run.type);
  st.m = m;
  st.l = l;
}

// A block of queries of all G heads sharing one KV head, against its run: tiles of keys are
// converted to fp32 once for the whole group, then two GEMMs per tile with an online softmax
// (flash-attention style). Row r = g * nb + t is query t of the group's head g.
void attend_block(const AttentionShape& s, const float* q_rows, int64_t q_ld, const int32_t* q_pos, int64_t nb, int64_t group,
                  const KvRun& run, float* out_rows, int64_t out_ld, float* lse_rows, int64_t lse_ld) {
  const int64_t dk = s.head_dim_k, dv = s.head_dim_v, rows = nb * group;
  std::vector<int64_t> lo(static_cast<size_t>(nb)), hi(static_cast<size_t>(nb));
  int64_t range_lo = run.len, range_hi = 0;
  for (int64_t t = 0; t < nb; ++t) {
    visible_range(run, q_pos[t], s.window, lo[static_cast<size_t>(t)], hi[static_cast<size_t>(t)]);
    range_lo = std::min(range_lo, lo[static_cast<size_t>(t)]);
    range_hi = std::max(range_hi, hi[static_cast<size_t>(t)]);
  }
  std::vector<float> qb(static_cast<size_t>(rows * dk)), kt(static_cast<size_t>(kKeyTile * dk)),
      vt(static_cast<size_t>(kKeyTile * dv)), sc(static_cast<size_t>(rows * kKeyTile)), acc(static_cast<size_t>(rows * dv), 0.0f),
      pv(acc.size()), vrow(static_cast<size_t>(dv));
  std::vector<float> m(static_cast<size_t>(rows), kNegInf), l(static_cast<size_t>(rows), 0.0f);
  for (int64_t g = 0; g < group; ++g)
    for (int64_t t = 0; t < nb; ++t)
      for (int64_t i = 0; i < dk; ++i) qb[static_cast<size_t>((g * nb + t) * dk + i)] = q_rows[t * q_ld + g * dk + i] * s.scale;

  for (int64_t j0 = range_lo; j0 < range_hi; j0 += kKeyTile) {
    const int64_t nt = std::min(kKeyTile, range_hi - j0);
    // Scores straight from the cached key rows (fp16/fp32 weights of a matmul), values
    // converted to fp32 and transposed so the second product is a matmul too.
    WeightMatrix keys;
    keys.type = run.type == KvElement::F32 ? TensorType::F32 : run.type == KvElement::F16 ? TensorType::F16 : TensorType::BF16;
    keys.data = static_cast<const uint8_t*>(run.k) + j0 * run.k_stride * elem_bytes(run.type);
    keys.rows = nt;
    keys.cols = dk;
    keys.row_bytes = static_cast<size_t>(run.k_stride) * elem_bytes(run.type);
    matmul(keys, qb.data(), rows, sc.data(), nt);
    for (int64_t j = 0; j < nt; ++j) {
      row_to_f32(run.v, j0 + j, run.v_stride, dv, run.type, vrow.data());
      for (int64_t i = 0; i < dv; ++i) vt[static_cast<size_t>(i * nt + j)] = vrow[static_cast<size_t>(i)];
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = r % nb;
      float* row = sc.data() + r * nt;
      const int64_t a = std::max<int64_t>(lo[static_cast<size_t>(t)] - j0, 0);
      const int64_t b = std::min<int64_t>(hi[static_cast<size_t>(t)] - j0, nt);
      if (a >= b) {  // nothing visible to this query in this tile
        std::fill(row, row + nt, 0.0f);
        continue;
      }
      std::fill(row, row + a, kNegInf);
      std::fill(row + b, row + nt, kNegInf);
      const float tile_max = *std::max_element(row + a, row + b);
      float& mr = m[static_cast<size_t>(r)];
      const float new_m = std::max(mr, tile_max);
      const float alpha = mr == kNegInf ? 0.0f : std::exp(mr - new_m);
      const float sum = exp_shift_sum(row, nt, new_m);  // masked -inf entries become 0
      l[static_cast<size_t>(r)] = l[static_cast<size_t>(r)] * alpha + sum;
      mr = new_m;
      if (alpha != 1.0f) {
        float* a_row = acc.data() + r * dv;
        for (int64_t i = 0; i < dv; ++i) a_row[i] *= alpha;
      }
    }
    WeightMatrix values_t;  // dv rows of nt values
    values_t.type = TensorType::F32;
    values_t.data = reinterpret_cast<const uint8_t*>(vt.data());
    values_t.rows = dv;
    values_t.cols = nt;
    values_t.row_bytes = static_cast<size_t>(nt) * sizeof(float);
    matmul(values_t, sc.data(), rows, pv.data(), dv);
    for (size_t i = 0; i < acc.size(); ++i) acc[i] += pv[i];
  }
  for (int64_t g = 0; g < group; ++g)
    for (int64_t t = 0; t < nb; ++t) {
      const int64_t r = g * nb + t;
      const float inv = l[static_cast<size_t>(r)] > 0.0f ? 1.0f / l[static_cast<size_t>(r)] : 0.0f;
      for (int64_t i = 0; i < dv; ++i) out_rows[t * out_ld + g * dv + i] = acc[static_cast<size_t>(r * dv + i)] * inv;
      if (lse_rows) lse_rows[t * lse_ld + g] = m[static_cast<size_t>(r)] + std::log(l[static_cast<size_t>(r)]);
    }
}

}  // namespace

void attention(const AttentionShape& s, const float* q, const int32_t* q_pos, int64_t n_q, const KvRun* runs, float* out,
               float* lse) {
  const int64_t group = s.n_head / s.n_head_kv;
  const int64_t q_ld = s.n_head * s.head_dim_k, out_ld = s.n_head * s.head_dim_v;

  if (n_q >= 8) {
    // Work items: (KV head, block of queries), later blocks first since causal ones cost more.
    const int64_t n_blocks = (n_q + kQueryBlock - 1) / kQueryBlock;
    const int64_t items = s.n_head_kv * n_blocks;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t h = it % s.n_head_kv, blk = n_blocks - 1 - it / s.n_head_kv;
      const int64_t t0 = blk * kQueryBlock, nb = std::min(kQueryBlock, n_q - t0);
      attend_block(s, q + t0 * q_ld + h * group * s.head_dim_k, q_ld, q_pos + t0, nb, group, runs[h],
                   out + t0 * out_ld + h * group * s.head_dim_v, out_ld, lse ? lse + t0 * s.n_head + h * group : nullptr,
                   s.n_head);
    }
    return;
  }

  // Few queries (decode): split each head's key range so every thread has work, then merge
  // the partial softmaxes by their maxima and sums.
  const int threads = omp_get_max_threads();
  const int64_t longest = [&] {
    int64_t n = 0;
    for (int64_t h = 0; h < s.n_head_kv; ++h) n = std::max(n, runs[h].len);
    return n;
  }();
  int64_t splits = std::max<int64_t>(1, (2 * threads + s.n_head * n_q - 1) / (s.n_head * n_q));
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, longest / 512));
  const int64_t items = n_q * s.n_head * splits;
  std::vector<float> part_o(static_cast<size_t>(items * s.head_dim_v));
  std::vector<OnlineSoftmax> part_st(static_cast<size_t>(items));
#pragma omp parallel
  {
    std::vector<float> scores;
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t sp = it % splits, h = (it / splits) % s.n_head, t = it / (splits * s.n_head);
      const KvRun& run = runs[h / group];
      int64_t lo, hi;
      visible_range(run, q_pos[t], s.window, lo, hi);
      const int64_t span = (hi - lo + splits - 1) / splits;
      const int64_t a = std::min(hi, lo + sp * span), b = std::min(hi, a + span);
      attend_one(s, q + t * q_ld + h * s.head_dim_k, run, a, b, scores, part_o.data() + it * s.head_dim_v,
                 part_st[static_cast<size_t>(it)]);
    }
  }
  for (int64_t t = 0; t < n_q; ++t)
    for (int64_t h = 0; h < s.n_head; ++h) {
      const int64_t base = (t * s.n_head + h) * splits;
      float m = kNegInf;
      for (int64_t sp = 0; sp < splits; ++sp) m = std::max(m, part_st[static_cast<size_t>(base + sp)].m);
      float* o = out + t * out_ld + h * s.head_dim_v;
      std::fill(o, o + s.head_dim_v, 0.0f);
      float l = 0.0f;
      for (int64_t sp = 0; sp < splits; ++sp) {
        const auto& st = part_st[static_cast<size_t>(base + sp)];
        if (st.m == kNegInf) continue;
        const float w = std::exp(st.m - m);
        l += st.l * w;
        const float* po = part_o.data() + (base + sp) * s.head_dim_v;
        for (int64_t i = 0; i < s.head_dim_v; ++i) o[i] += w * po[i];
      }
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      for (int64_t i = 0; i < s.head_dim_v; ++i) o[i] *= inv;
      if (lse) lse[t * s.n_head + h] = m + std::log(l);
    }
}

}  // namespace kvsqueeze::kernels
