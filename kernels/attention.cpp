#include "kernels/gcc_intrinsics_warnings.h"  // first: before any intrinsics header
#include "kernels/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/fp16.h"
#include "kernels/hadamard.h"
#include "kernels/kv_rows.h"
#include "kernels/matmul.h"
#include "kernels/vec_math.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {
namespace {

constexpr int64_t kQueryBlock = 64;  // queries per work item in prefill
constexpr int64_t kKeyTile = 128;    // keys converted to fp32 at a time for the GEMM path
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Running state of an online softmax for one query: max, sum of weights, weighted values.
struct OnlineSoftmax {
  float m = kNegInf;
  float l = 0.0f;
};

constexpr int64_t kValueBlock = 64;

// o[0:d] += sum_j p[j] * v[j][0:d] for nb rows of v (fp32, row stride d).
void accumulate_rows(float* o, const float* p, const float* v, int64_t nb, int64_t d) {
  int64_t c0 = 0;
#if defined(__AVX512F__)
  constexpr int64_t kRegs = 8;  // 128 output floats held in registers per pass
  for (; c0 + 16 * kRegs <= d; c0 += 16 * kRegs) {
    __m512 acc[kRegs];
    for (int r = 0; r < kRegs; ++r) acc[r] = _mm512_loadu_ps(o + c0 + 16 * r);
    for (int64_t j = 0; j < nb; ++j) {
      const __m512 pj = _mm512_set1_ps(p[j]);
      for (int r = 0; r < kRegs; ++r) acc[r] = _mm512_fmadd_ps(pj, _mm512_loadu_ps(v + j * d + c0 + 16 * r), acc[r]);
    }
    for (int r = 0; r < kRegs; ++r) _mm512_storeu_ps(o + c0 + 16 * r, acc[r]);
  }
  for (; c0 + 16 <= d; c0 += 16) {
    __m512 acc = _mm512_loadu_ps(o + c0);
    for (int64_t j = 0; j < nb; ++j) acc = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), _mm512_loadu_ps(v + j * d + c0), acc);
    _mm512_storeu_ps(o + c0, acc);
  }
#elif defined(__AVX2__) && defined(__FMA__)
  constexpr int64_t kRegs = 8;  // 64 output floats held in registers per pass
  for (; c0 + 8 * kRegs <= d; c0 += 8 * kRegs) {
    __m256 acc[kRegs];
    for (int r = 0; r < kRegs; ++r) acc[r] = _mm256_loadu_ps(o + c0 + 8 * r);
    for (int64_t j = 0; j < nb; ++j) {
      const __m256 pj = _mm256_set1_ps(p[j]);
      for (int r = 0; r < kRegs; ++r) acc[r] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + j * d + c0 + 8 * r), acc[r]);
    }
    for (int r = 0; r < kRegs; ++r) _mm256_storeu_ps(o + c0 + 8 * r, acc[r]);
  }
  for (; c0 + 8 <= d; c0 += 8) {
    __m256 acc = _mm256_loadu_ps(o + c0);
    for (int64_t j = 0; j < nb; ++j) acc = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(v + j * d + c0), acc);
    _mm256_storeu_ps(o + c0, acc);
  }
#endif
  for (; c0 < d; ++c0) {
    float acc = o[c0];
    for (int64_t j = 0; j < nb; ++j) acc += p[j] * v[j * d + c0];
    o[c0] = acc;
  }
}

#if defined(__AVX512F__)
// o[h * ldo + 0:16R] += sum_j p[h * ldp + j] * v[j][0:16R] for HP heads: each value row is
// loaded once for all of them and their HP x R output vectors stay in registers, so the FMAs
// are HP*R independent chains (one chain per output vector waits on the FMA latency).
template <int R, int HP>
void accumulate_heads(float* o, int64_t ldo, const float* p, int64_t ldp, const float* v, int64_t nb) {
  constexpr int64_t d = 16 * R;
  __m512 acc[HP][R];
  for (int h = 0; h < HP; ++h)
    for (int r = 0; r < R; ++r) acc[h][r] = _mm512_loadu_ps(o + h * ldo + 16 * r);
  for (int64_t j = 0; j < nb; ++j) {
    __m512 vj[R];
    for (int r = 0; r < R; ++r) vj[r] = _mm512_loadu_ps(v + j * d + 16 * r);
    for (int h = 0; h < HP; ++h) {
      const __m512 pj = _mm512_set1_ps(p[h * ldp + j]);
      for (int r = 0; r < R; ++r) acc[h][r] = _mm512_fmadd_ps(pj, vj[r], acc[h][r]);
    }
  }
  for (int h = 0; h < HP; ++h)
    for (int r = 0; r < R; ++r) _mm512_storeu_ps(o + h * ldo + 16 * r, acc[h][r]);
}

constexpr int kAccumulators = 24;  // of the 32 vector registers; the rest hold a value row

// Heads [0, heads) in passes of at most kAccumulators / R heads, as even as possible.
template <int R, int HP = 1>
void accumulate_heads(int64_t heads, float* o, int64_t ldo, const float* p, int64_t ldp, const float* v, int64_t nb) {
  constexpr int kMaxHeads = std::max(1, std::min(8, kAccumulators / R));
  const int64_t passes = (heads + kMaxHeads - 1) / kMaxHeads;
  const int64_t per_pass = (heads + passes - 1) / passes;
  if constexpr (HP < kMaxHeads)
    if (per_pass > HP) return accumulate_heads<R, HP + 1>(heads, o, ldo, p, ldp, v, nb);
  for (int64_t h = 0; h < heads; h += HP) {
    if (heads - h >= HP) accumulate_heads<R, HP>(o + h * ldo, ldo, p + h * ldp, ldp, v, nb);
    else accumulate_heads<R, 1>(heads - h, o + h * ldo, ldo, p + h * ldp, ldp, v, nb);
  }
}
#endif

// o[g * d + 0:d] += sum_j p[g * ldp + j] * v[j][0:d] for G heads and nb value rows.
void accumulate_group_rows(float* o, int64_t group, const float* p, int64_t ldp, const float* v, int64_t nb, int64_t d) {
#if defined(__AVX512F__)
  switch (d) {
    case 16: return accumulate_heads<1>(group, o, d, p, ldp, v, nb);
    case 32: return accumulate_heads<2>(group, o, d, p, ldp, v, nb);
    case 64: return accumulate_heads<4>(group, o, d, p, ldp, v, nb);
    case 128: return accumulate_heads<8>(group, o, d, p, ldp, v, nb);
    case 256: return accumulate_heads<16>(group, o, d, p, ldp, v, nb);
    default: break;
  }
#endif
  for (int64_t g = 0; g < group; ++g) accumulate_rows(o + g * d, p + g * ldp, v, nb, d);
}

constexpr int64_t kDecodeTile = 256;  // keys scored at a time in decode: the scores stay in L1

// One query position for the G heads sharing a KV head, slots [lo, hi), flash-decoding style:
// per tile of keys, the G heads' scores in one product (each cached row converted once for the
// group), an online softmax update, then the tile's values accumulated into all G outputs.
// q_group: G consecutive head vectors; o: G x dv; st: G softmax states.
void attend_group(const AttentionShape& s, const float* q_group, int64_t group, const KvRun& run, int64_t lo, int64_t hi,
                  std::vector<float>& scores, std::vector<float>& row, std::vector<float>& q_kept, float* o, OnlineSoftmax* st) {
  const int64_t n = hi - lo, dk = s.head_dim_k, dv = s.head_dim_v, kd = run.k_stride;
  std::fill(o, o + group * dv, 0.0f);
  for (int64_t g = 0; g < group; ++g) st[g] = OnlineSoftmax{};
  if (n <= 0) return;
  // The G query vectors scaled, and as the keys are stored (channel-pruned or rotated).
  q_kept.resize(static_cast<size_t>(group * (kd + dk)));
  float* scaled = q_kept.data() + group * kd;
  for (int64_t i = 0; i < group * dk; ++i) scaled[i] = q_group[i] * s.scale;
  const float* q = scaled;
  if (run.k_channels || run.k_rotated) {
    for (int64_t g = 0; g < group; ++g) gather_query(run, scaled + g * dk, q_kept.data() + g * kd);
    q = q_kept.data();
  }
  scores.resize(static_cast<size_t>(group * kDecodeTile));
  row.resize(static_cast<size_t>(kValueBlock * dv));
  for (int64_t j0 = lo; j0 < hi; j0 += kDecodeTile) {
    const int64_t nt = std::min(kDecodeTile, hi - j0);
    decode_key_scores(run, j0, nt, q, group, scores.data(), nt);
    for (int64_t g = 0; g < group; ++g) {
      float* sc = scores.data() + g * nt;
      const float new_m = std::max(st[g].m, max_of(sc, nt));
      const float alpha = st[g].m == kNegInf ? 0.0f : std::exp(st[g].m - new_m);
      st[g].l = st[g].l * alpha + exp_shift_sum(sc, nt, new_m);
      st[g].m = new_m;
      if (alpha != 1.0f)
        for (int64_t i = 0; i < dv; ++i) o[g * dv + i] *= alpha;
    }
    // Values in blocks converted to fp32 once for all G heads.
    for (int64_t b0 = 0; b0 < nt; b0 += kValueBlock) {
      const int64_t nb = std::min(kValueBlock, nt - b0);
      stored_value_rows(run, j0 + b0, nb, row.data());
      accumulate_group_rows(o, group, scores.data() + b0, nt, row.data(), nb, dv);
    }
  }
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
  const int64_t kd = run.k_stride;  // channels the key rows hold (dk unless channel-pruned)
  std::vector<float> qb(static_cast<size_t>(rows * kd)),
      vt(static_cast<size_t>(kKeyTile * dv)), sc(static_cast<size_t>(rows * kKeyTile)), acc(static_cast<size_t>(rows * dv), 0.0f),
      pv(acc.size()), vrows(static_cast<size_t>(kKeyTile * dv));
  std::vector<float> m(static_cast<size_t>(rows), kNegInf), l(static_cast<size_t>(rows), 0.0f);
  for (int64_t g = 0; g < group; ++g)
    for (int64_t t = 0; t < nb; ++t)
      for (int64_t i = 0; i < kd; ++i)
        qb[static_cast<size_t>((g * nb + t) * kd + i)] = q_rows[t * q_ld + g * dk + (run.k_channels ? run.k_channels[i] : i)] * s.scale;
  if (run.k_rotated)  // the keys are stored rotated: q.k == Hq.Hk
    for (int64_t r = 0; r < rows; ++r) hadamard_rotate(qb.data() + r * kd, kd);

  for (int64_t j0 = range_lo; j0 < range_hi; j0 += kKeyTile) {
    const int64_t nt = std::min(kKeyTile, range_hi - j0);
    // Scores straight from the cached key rows (fp16/fp32 weights of a matmul), values
    // converted to fp32 and transposed so the second product is a matmul too.
    key_scores(run, j0, nt, qb.data(), rows, sc.data(), nt);
    stored_value_rows(run, j0, nt, vrows.data());
    for (int64_t j = 0; j < nt; ++j)
      for (int64_t i = 0; i < dv; ++i) vt[static_cast<size_t>(i * nt + j)] = vrows[static_cast<size_t>(j * dv + i)];
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
      const float tile_max = max_of(row + a, b - a);
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
      if (run.v_rotated) hadamard_rotate(out_rows + t * out_ld + g * dv, dv);  // sum p Hv == H sum p v
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

  // Few queries (decode): one work item per (query, KV head, key split); splits give every
  // thread work when there are few KV heads, and the partial softmaxes merge by max and sum.
  const int threads = omp_get_max_threads();
  const int64_t dv = s.head_dim_v;
  const int64_t longest = [&] {
    int64_t n = 0;
    for (int64_t h = 0; h < s.n_head_kv; ++h) n = std::max(n, runs[h].len);
    return n;
  }();
  int64_t splits = std::max<int64_t>(1, (2 * threads + s.n_head_kv * n_q - 1) / (s.n_head_kv * n_q));
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, longest / 512));
  const int64_t items = n_q * s.n_head_kv * splits;
  std::vector<float> part_o(static_cast<size_t>(items * group * dv));
  std::vector<OnlineSoftmax> part_st(static_cast<size_t>(items * group));
#pragma omp parallel
  {
    std::vector<float> scores, row, q_kept;
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t sp = it % splits, hk = (it / splits) % s.n_head_kv, t = it / (splits * s.n_head_kv);
      const KvRun& run = runs[hk];
      int64_t lo, hi;
      visible_range(run, q_pos[t], s.window, lo, hi);
      const int64_t span = (hi - lo + splits - 1) / splits;
      const int64_t a = std::min(hi, lo + sp * span), b = std::min(hi, a + span);
      attend_group(s, q + t * q_ld + hk * group * s.head_dim_k, group, run, a, b, scores, row, q_kept,
                   part_o.data() + it * group * dv, part_st.data() + it * group);
    }
  }
  for (int64_t t = 0; t < n_q; ++t)
    for (int64_t h = 0; h < s.n_head; ++h) {
      const int64_t hk = h / group, g = h % group;
      const int64_t base = (t * s.n_head_kv + hk) * splits;
      float m = kNegInf;
      for (int64_t sp = 0; sp < splits; ++sp) m = std::max(m, part_st[static_cast<size_t>((base + sp) * group + g)].m);
      float* o = out + t * out_ld + h * dv;
      std::fill(o, o + dv, 0.0f);
      float l = 0.0f;
      for (int64_t sp = 0; sp < splits; ++sp) {
        const auto& st = part_st[static_cast<size_t>((base + sp) * group + g)];
        if (st.m == kNegInf || st.l == 0.0f) continue;
        const float w = std::exp(st.m - m);
        l += st.l * w;
        const float* po = part_o.data() + ((base + sp) * group + g) * dv;
        for (int64_t i = 0; i < dv; ++i) o[i] += w * po[i];
      }
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      for (int64_t i = 0; i < dv; ++i) o[i] *= inv;
      if (runs[hk].v_rotated) hadamard_rotate(o, dv);  // the values are stored rotated
      if (lse) lse[t * s.n_head + h] = m + std::log(l);
    }
}

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
