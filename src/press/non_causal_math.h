#pragma once
// Non-causal chunked attention column sums (kvpress NonCausalAttnPress, docs/METHODS.md §3.10),
// shared by non_causal_attn and compactor: the context's queries (RoPE at their positions)
// attend without a causal mask to the keys of their own chunk of `chunk` slots; the attention
// each slot receives is averaged over the query group, times ||v||, avg-pooled (3) and
// z-scored over every head.
#include <cmath>
#include <unordered_map>

#include "backend/host_math.h"
#include "press/query_stats.h"

namespace kvsqueeze::non_causal {

struct Options {
  int64_t chunk = 256;
  double scale = 1.0;   // on q.k (kvpress: none, i.e. 1)
  bool parity = false;  // kvpress's padding of the last chunk (see the press notes)
};

// Scores of slots [lo, len − hi_trim) of each head, z-scored over all heads.
inline LayerScores layer_scores(const LayerView& v, const qstats::QueryLog::Layer& log, int64_t lo_slots, int64_t hi_trim,
                                const Options& o) {
  const int64_t hkv = v.n_head_kv(), group = v.group(), hq = v.config().n_head, d = v.head_dim_k(), dv = v.head_dim_v();
  const auto style = host::rope_style(v.config().rope_neox);
  const auto freq = v.inv_freq();
  std::unordered_map<int32_t, int64_t> row_of;
  for (size_t r = 0; r < log.pos.size(); ++r) row_of[log.pos[r]] = static_cast<int64_t>(r);
  LayerScores out(static_cast<size_t>(hkv));
  std::vector<float> c(static_cast<size_t>(d / 2)), s(static_cast<size_t>(d / 2));
  for (int64_t h = 0; h < hkv; ++h) {
    const int64_t len = v.length(h), lo = std::min(lo_slots, len), hi = std::max(lo, len - hi_trim), n = hi - lo;
    const auto pos = v.positions(h);
    const std::vector<float> keys = v.keys(h), vals = v.values(h);
    // Post-RoPE queries of the scored slots' rows, per query head of the group.
    std::vector<float> q(static_cast<size_t>(n * group * d));
    for (int64_t i = 0; i < n; ++i) {
      const auto it = row_of.find(pos[static_cast<size_t>(lo + i)]);
      if (it == row_of.end()) throw Error("non_causal_attn: slot at position " + std::to_string(pos[static_cast<size_t>(lo + i)]) +
                                          " was not evaluated in this prefill (prefill only)");
      const int32_t p = pos[static_cast<size_t>(lo + i)];
      host::rope_tables(&p, 1, freq.data(), d, c.data(), s.data());
      for (int64_t g = 0; g < group; ++g) {
        float* dst = q.data() + (i * group + g) * d;
        const float* src = log.q.data() + (it->second * hq + h * group + g) * d;
        std::copy(src, src + d, dst);
        host::rope_apply(dst, d, c.data(), s.data(), style);
      }
    }
    std::vector<double> col(static_cast<size_t>(n), 0.0), row;
    std::vector<float> qg, logits;
    for (int64_t c0 = 0; c0 < n; c0 += o.chunk) {
      const int64_t c1 = std::min(n, c0 + o.chunk), m = c1 - c0, pad = o.parity ? o.chunk - m : 0;
      for (int64_t g = 0; g < group; ++g) {
        // The chunk's logits q_r . k_j in one GEMM (keys of the chunk x its queries of head g).
        qg.resize(static_cast<size_t>(m * d));
        logits.resize(static_cast<size_t>(m * m));
        for (int64_t r = c0; r < c1; ++r) std::copy_n(q.data() + (r * group + g) * d, d, qg.data() + (r - c0) * d);
        qstats::dot_rows(keys.data() + (lo + c0) * d, m, qg.data(), m, d, logits.data());
        for (int64_t r = c0; r < c1; ++r) {
          row.assign(static_cast<size_t>(m), 0.0);
          double mx = pad > 0 ? -1e-9 : -INFINITY;
          for (int64_t j = 0; j < m; ++j) {
            row[static_cast<size_t>(j)] = static_cast<double>(logits[static_cast<size_t>((r - c0) * m + j)]) * o.scale;
            mx = std::max(mx, row[static_cast<size_t>(j)]);
          }
          // kvpress pads the last chunk with keys whose logits are -1e-9: they share the mass.
          double total = static_cast<double>(pad) * std::exp(-1e-9 - mx);
          for (auto& x : row) total += (x = std::exp(x - mx));
          for (int64_t j = 0; j < m; ++j) col[static_cast<size_t>(c0 + j)] += row[static_cast<size_t>(j)] / total / static_cast<double>(group);
        }
        // kvpress's padded query rows (logits 0 on real keys, -1e-9 on padded ones) add a
        // near-uniform 1/chunk to every real column of the last chunk.
        if (pad > 0) {
          const double per = 1.0 / (static_cast<double>(m) + static_cast<double>(pad) * std::exp(-1e-9));
          for (int64_t j = 0; j < m; ++j) col[static_cast<size_t>(c0 + j)] += static_cast<double>(pad) * per / static_cast<double>(group);
        }
      }
    }
    std::vector<float> sc(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) {
      double nn = 0;
      for (int64_t a = 0; a < dv; ++a) nn += static_cast<double>(vals[static_cast<size_t>((lo + j) * dv + a)]) * vals[static_cast<size_t>((lo + j) * dv + a)];
      sc[static_cast<size_t>(j)] = static_cast<float>(col[static_cast<size_t>(j)] * std::sqrt(nn));
    }
    out[static_cast<size_t>(h)] = qstats::avg_pool3(sc);
  }
  qstats::zscore_all(out);
  return out;
}

}  // namespace kvsqueeze::non_causal
