#include "kernels/gcc_intrinsics_warnings.h"  // first: before any intrinsics header
// Second pass over the attention scores for the statistics presses ask for: probabilities of
// the last w queries, and per-slot column sums. Each uses the row's log-sum-exp from the main
// pass, so p = exp(s - lse) is exact without re-normalising, and nothing L x L is stored.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/attention.h"
#include "kernels/hadamard.h"
#include "kernels/kv_rows.h"
#include "kernels/vec_math.h"

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {
namespace {

constexpr int64_t kRowBlock = 64;
constexpr int64_t kKeyTile = 256;

}  // namespace

void attention_probabilities(const AttentionShape& s, const float* q, const int32_t* q_pos, int64_t n_q, const KvRun* runs,
                             const float* lse, const ProbabilityRequest& req, Probabilities& out) {
  const int64_t group = s.n_head / s.n_head_kv, dk = s.head_dim_k, q_ld = s.n_head * dk;
  const int64_t w = std::min(req.window_rows, n_q);
  out.window_rows = w;
  out.window.assign(static_cast<size_t>(w > 0 ? s.n_head : 0), {});
  out.column_sums.assign(static_cast<size_t>(req.column_sums ? s.n_head : 0), {});
  // Rows to visit: all of them for column sums, else only the window.
  const int64_t first_row = req.column_sums ? 0 : n_q - w;
  if (w == 0 && !req.column_sums) return;

#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < s.n_head; ++h) {
    const KvRun& run = runs[h / group];
    std::vector<float>* win = w > 0 ? &out.window[static_cast<size_t>(h)] : nullptr;
    std::vector<float>* col = req.column_sums ? &out.column_sums[static_cast<size_t>(h)] : nullptr;
    if (win) win->assign(static_cast<size_t>(w * run.len), 0.0f);
    if (col) col->assign(static_cast<size_t>(run.len), 0.0f);
    const int64_t kd = run.k_stride;  // channels the key rows hold (dk unless channel-pruned)
    std::vector<float> qb(static_cast<size_t>(kRowBlock * kd)), sc(static_cast<size_t>(kRowBlock * kKeyTile));
    std::vector<int64_t> lo(kRowBlock), hi(kRowBlock);
    for (int64_t t0 = first_row; t0 < n_q; t0 += kRowBlock) {
      const int64_t nb = std::min(kRowBlock, n_q - t0);
      int64_t range_lo = run.len, range_hi = 0;
      for (int64_t t = 0; t < nb; ++t) {
        visible_range(run, q_pos[t0 + t], s.window, lo[static_cast<size_t>(t)], hi[static_cast<size_t>(t)]);
        range_lo = std::min(range_lo, lo[static_cast<size_t>(t)]);
        range_hi = std::max(range_hi, hi[static_cast<size_t>(t)]);
        for (int64_t i = 0; i < kd; ++i)
          qb[static_cast<size_t>(t * kd + i)] = q[(t0 + t) * q_ld + h * dk + (run.k_channels ? run.k_channels[i] : i)] * s.scale;
        if (run.k_rotated) hadamard_rotate(qb.data() + t * kd, kd);  // the keys are stored rotated
      }
      for (int64_t j0 = range_lo; j0 < range_hi; j0 += kKeyTile) {
        const int64_t nt = std::min(kKeyTile, range_hi - j0);
        key_scores(run, j0, nt, qb.data(), nb, sc.data(), nt);
        for (int64_t t = 0; t < nb; ++t) {
          const int64_t a = std::max<int64_t>(lo[static_cast<size_t>(t)] - j0, 0);
          const int64_t b = std::min<int64_t>(hi[static_cast<size_t>(t)] - j0, nt);
          if (a >= b) continue;
          float* row = sc.data() + t * nt + a;
          exp_shift_sum(row, b - a, lse[(t0 + t) * s.n_head + h]);
          if (col)
            for (int64_t j = 0; j < b - a; ++j) (*col)[static_cast<size_t>(j0 + a + j)] += row[j];
          const int64_t wr = t0 + t - (n_q - w);
          if (win && wr >= 0) std::copy(row, row + (b - a), win->data() + wr * run.len + j0 + a);
        }
      }
    }
  }
}

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
