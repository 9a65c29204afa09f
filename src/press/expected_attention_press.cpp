// ExpectedAttention (kvpress ExpectedAttentionPress, docs/METHODS.md §3.7): the attention that
// future queries are expected to pay each slot, if queries are Gaussian. The mean and biased
// covariance of the context's pre-RoPE queries after the first n_sink rows are accumulated over
// prefill chunks (observe()), rotated by the mean RoPE rotation of the next n_future_positions
// positions, and give z_i = mu'.k_i/sqrt(d) + k_i^T Sig' k_i/(2d); a softmax over the non-sink
// slots per query head, the group mean, then (a + epsilon)·||v_i||. Sinks are protected.
// Future positions start after the context, also when a wrapper scores part of it. A view marked
// standalone (chunk(parity=true)) is scored as kvpress's ChunkPress does: statistics from its own
// query rows, future positions [len, len + n_future) with len its length.
#include <algorithm>
#include <cmath>

#include "press/press_registry.h"
#include "press/query_stats.h"

namespace kvsqueeze {
namespace {

struct ExpectedAttentionOptions {
  int64_t n_future_positions = 512;
  int64_t n_sink = 4;
  bool use_covariance = true;
  bool use_vnorm = true;
  double epsilon = 0;
};

class ExpectedAttentionPress : public ScorerPress {
 public:
  ExpectedAttentionPress(int64_t n_future, int64_t n_sink, bool cov, bool vnorm, double eps)
      : n_future_(n_future), n_sink_(n_sink), use_cov_(cov), use_vnorm_(vnorm), eps_(eps) {}
  std::string name() const override { return "expected_attention"; }
  StatsRequest needs() const override { return qstats::all_query_rows(); }

  void observe(const LayerView& v) override {
    if (v.config().layer_sliding[static_cast<size_t>(v.layer)]) return;  // never compressed
    const auto& st = v.stats;
    const int64_t hq = v.config().n_head, d = v.head_dim_k();
    if (!qstats::has_all_query_rows(v)) throw Error("expected_attention: pre-RoPE queries were not computed for layer " + std::to_string(v.layer));
    auto& acc = acc_[v.layer];
    if (qstats::starts_context(v) || acc.sum.empty()) {
      acc = Acc{};
      acc.sum.assign(static_cast<size_t>(hq * d), 0.0);
      if (use_cov_) acc.outer.assign(static_cast<size_t>(hq * d * d), 0.0);
    }
    add_rows(acc, st, hq, d);
    if (!st.positions.empty()) acc.next = st.positions.back() + 1;
  }

  LayerScores score(const LayerView& v) override {
    const int64_t hkv = v.n_head_kv(), group = v.group(), hq = v.config().n_head, d = v.head_dim_k();
    Acc standalone;
    const Acc* accp = &standalone;
    int32_t next = 0;
    if (v.stats.standalone) {
      // A context of its own (chunk(parity=true), as kvpress's ChunkPress): the view's query
      // rows only, future positions from its length.
      if (v.stats.pre_rope_rows != v.length(0) || static_cast<int64_t>(v.stats.pre_rope_queries.size()) != v.stats.pre_rope_rows * hq * d)
        throw Error("expected_attention: scoring a chunk as a context of its own needs the query rows of all its " +
                    std::to_string(v.length(0)) + " slots in the last prefill chunk (layer " + std::to_string(v.layer) + ")");
      standalone.sum.assign(static_cast<size_t>(hq * d), 0.0);
      if (use_cov_) standalone.outer.assign(static_cast<size_t>(hq * d * d), 0.0);
      add_rows(standalone, v.stats, hq, d);
      next = static_cast<int32_t>(standalone.rows);
    } else {
      const auto it = acc_.find(v.layer);
      if (it == acc_.end()) throw Error("expected_attention: layer " + std::to_string(v.layer) + " was not observed");
      accp = &it->second;
      next = accp->next;  // after the context, also for a view of part of it
    }
    const Acc& acc = *accp;
    const qstats::AvgRope rope(v, next, n_future_);
    // Rotated per query head statistics.
    std::vector<double> mu(static_cast<size_t>(hq * d), 0.0), cov;
    if (use_cov_) cov.assign(static_cast<size_t>(hq * d * d), 0.0);
    const double cnt = static_cast<double>(acc.count);
    for (int64_t q = 0; q < hq && acc.count > 0; ++q) {
      double* m = mu.data() + q * d;
      for (int64_t i = 0; i < d; ++i) m[i] = acc.sum[static_cast<size_t>(q * d + i)] / cnt;
      if (use_cov_) {
        double* c = cov.data() + q * d * d;
        const double* o = acc.outer.data() + q * d * d;
        for (int64_t i = 0; i < d; ++i)
          for (int64_t j = 0; j <= i; ++j) c[i * d + j] = c[j * d + i] = o[i * d + j] / cnt - m[i] * m[j];
        rope.apply_both(c);
      }
      rope.apply(m);
    }
    const double sqrt_d = std::sqrt(static_cast<double>(d));
    LayerScores out(static_cast<size_t>(hkv));
    std::vector<double> ck(static_cast<size_t>(d));
    for (int64_t h = 0; h < hkv; ++h) {
      const int64_t len = v.length(h), sinks = std::min(n_sink_, len), n = len - sinks;
      auto& s = out[static_cast<size_t>(h)];
      s.assign(static_cast<size_t>(len), INFINITY);
      if (n == 0) continue;
      const std::vector<float> keys = v.keys(h);
      std::vector<double> mean(static_cast<size_t>(n), 0.0), z(static_cast<size_t>(n));
      for (int64_t g = 0; g < group; ++g) {
        const int64_t q = h * group + g;
        const double* m = mu.data() + q * d;
        // k^T Sig' k for every key at once: K Sig' on the matmul kernels (Sig' is symmetric).
        std::vector<double> quad;
        if (use_cov_) quad = qstats::quadratic_forms(cov.data() + q * d * d, keys.data() + sinks * d, n, d);
        double zmax = -INFINITY;
        for (int64_t i = 0; i < n; ++i) {
          const float* k = keys.data() + (sinks + i) * d;
          double dot = 0;
          for (int64_t a = 0; a < d; ++a) dot += m[a] * k[a];
          double val = dot / sqrt_d;
          if (use_cov_) val += quad[static_cast<size_t>(i)] / static_cast<double>(d) / 2.0;
          z[static_cast<size_t>(i)] = val;
          zmax = std::max(zmax, val);
        }
        double total = 0;
        for (auto& x : z) total += (x = std::exp(x - zmax));
        for (int64_t i = 0; i < n; ++i) mean[static_cast<size_t>(i)] += z[static_cast<size_t>(i)] / total / static_cast<double>(group);
      }
      const std::vector<float> vals = use_vnorm_ ? v.values(h) : std::vector<float>{};
      const int64_t dv = v.head_dim_v();
      for (int64_t i = 0; i < n; ++i) {
        double x = mean[static_cast<size_t>(i)];
        if (use_vnorm_) {
          double nn = 0;
          for (int64_t a = 0; a < dv; ++a) nn += static_cast<double>(vals[static_cast<size_t>((sinks + i) * dv + a)]) * vals[static_cast<size_t>((sinks + i) * dv + a)];
          x = (x + eps_) * std::sqrt(nn);
        }
        s[static_cast<size_t>(sinks + i)] = static_cast<float>(x);
      }
    }
    return out;
  }

 private:
  struct Acc {
    int64_t rows = 0, count = 0;  // context rows seen; rows past the sinks
    int32_t next = 0;             // the position after the last row
    std::vector<double> sum, outer;
  };
  // Adds the pre-RoPE query rows of `st` (after the first n_sink of the context) to `acc`.
  void add_rows(Acc& acc, const LayerStats& st, int64_t hq, int64_t d) const {
    const int64_t skip = std::clamp<int64_t>(n_sink_ - acc.rows, 0, st.pre_rope_rows);  // statistics skip the sink rows
    const int64_t m = st.pre_rope_rows - skip;
    acc.rows += st.pre_rope_rows;
    if (m <= 0) return;
    acc.count += m;
    for (int64_t q = 0; q < hq; ++q) {
      const float* first = st.pre_rope_queries.data() + (skip * hq + q) * d;
      double* sum = acc.sum.data() + q * d;
      for (int64_t t = 0; t < m; ++t)
        for (int64_t i = 0; i < d; ++i) sum[i] += first[t * hq * d + i];
      // This chunk's sum of x x^T as one fp32 GEMM, accumulated in double over chunks.
      if (use_cov_) qstats::add_gram(first, m, hq * d, d, acc.outer.data() + q * d * d);
    }
  }
  int64_t n_future_, n_sink_;
  bool use_cov_, use_vnorm_;
  double eps_;
  std::map<int64_t, Acc> acc_;
};

}  // namespace

void register_expected_attention_press() {
  using O = ExpectedAttentionOptions;
  register_press<O>({"expected_attention",
                     "Attention expected from future queries under a Gaussian model of the context's queries (ExpectedAttention).", {}, 0,
                     "Query statistics are accumulated over prefill chunks (exact for any chunk size). Future positions start "
                     "after the last context position. Mean and covariance are accumulated in double precision."},
                    {field("n_future_positions", &O::n_future_positions, 1, 1e7, "future positions whose mean RoPE rotation is applied to the query statistics"),
                     field("n_sink", &O::n_sink, 0, 1e6, "first slots kept (attention sinks); their queries are left out of the statistics"),
                     field("use_covariance", &O::use_covariance, "add the query covariance term k^T Sig k/(2d)"),
                     field("use_vnorm", &O::use_vnorm, "weight the expected attention by ||v|| as (a + epsilon)·||v||"),
                     field("epsilon", &O::epsilon, 0, 1e6, "added to the expected attention before the value-norm weighting")},
                    [](const O& o) {
                      return std::make_unique<ExpectedAttentionPress>(o.n_future_positions, o.n_sink, o.use_covariance, o.use_vnorm, o.epsilon);
                    });
}

}  // namespace kvsqueeze
