// CAP / CAPKV (kvpress CapPress, docs/METHODS.md §3.14): a query anchor mu_q = Rbar · mean of the
// context's pre-RoPE queries after the sinks (Rbar: mean RoPE rotation of the next
// n_future_positions positions, as in expected_attention), weights w_i = exp(tau·(c_i − max c))
// from the clamped cosine c_i of mu_q and k_i, a capacity matrix A = I + Σ (w_i + eps) v_i v_iᵀ
// per query head, and s_i = w_i · v_iᵀ A⁻¹ v_i, averaged over the group. Sinks are protected.
#include <cmath>

#include "press/press_registry.h"
#include "press/query_stats.h"

namespace kvsqueeze {
namespace {

struct CapOptions {
  double tau = 5.0;
  int64_t n_future_positions = 512;
  int64_t n_sink = 4;
  double epsilon = 1e-6;
};

class CapPress : public ScorerPress {
 public:
  CapPress(double tau, int64_t n_future, int64_t n_sink, double eps) : tau_(tau), n_future_(n_future), n_sink_(n_sink), eps_(eps) {}
  std::string name() const override { return "cap"; }
  StatsRequest needs() const override { return qstats::all_query_rows(); }

  void observe(const LayerView& v) override {
    if (v.config().layer_sliding[static_cast<size_t>(v.layer)]) return;  // never compressed
    const auto& st = v.stats;
    const int64_t width = v.config().n_head * v.head_dim_k();
    if (!qstats::has_all_query_rows(v)) throw Error("cap: pre-RoPE queries were not computed for layer " + std::to_string(v.layer));
    auto& acc = acc_[v.layer];
    if (qstats::starts_context(v) || acc.sum.empty()) {
      acc = Acc{};
      acc.sum.assign(static_cast<size_t>(width), 0.0);
    }
    for (int64_t t = 0; t < st.pre_rope_rows; ++t, ++acc.rows) {
      if (acc.rows < n_sink_) continue;
      ++acc.count;
      const float* x = st.pre_rope_queries.data() + t * width;
      for (int64_t i = 0; i < width; ++i) acc.sum[static_cast<size_t>(i)] += x[i];
    }
  }

  LayerScores score(const LayerView& v) override {
    const int64_t hkv = v.n_head_kv(), group = v.group(), d = v.head_dim_k(), dv = v.head_dim_v();
    const auto it = acc_.find(v.layer);
    if (it == acc_.end()) throw Error("cap: layer " + std::to_string(v.layer) + " was not observed");
    const Acc& acc = it->second;
    const int32_t next = v.stats.positions.empty() ? static_cast<int32_t>(acc.rows) : v.stats.positions.back() + 1;
    const qstats::AvgRope rope(v, next, n_future_);
    LayerScores out(static_cast<size_t>(hkv));
    for (int64_t h = 0; h < hkv; ++h) {
      const int64_t len = v.length(h), sinks = std::min(n_sink_, len), n = len - sinks;
      auto& s = out[static_cast<size_t>(h)];
      s.assign(static_cast<size_t>(len), INFINITY);
      if (n == 0) continue;
      const std::vector<float> keys = v.keys(h), vals = v.values(h);
      std::vector<double> knorm(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        double nn = 0;
        for (int64_t a = 0; a < d; ++a) nn += static_cast<double>(keys[static_cast<size_t>((sinks + i) * d + a)]) * keys[static_cast<size_t>((sinks + i) * d + a)];
        knorm[static_cast<size_t>(i)] = std::max(std::sqrt(nn), 1e-12);  // F.normalize
      }
      std::vector<double> mean(static_cast<size_t>(n), 0.0), w(static_cast<size_t>(n)), a(static_cast<size_t>(dv * dv)), x(static_cast<size_t>(dv));
      for (int64_t g = 0; g < group; ++g) {
        const int64_t q = h * group + g;
        std::vector<double> mu(static_cast<size_t>(d), 0.0);
        for (int64_t i = 0; i < d && acc.count > 0; ++i) mu[static_cast<size_t>(i)] = acc.sum[static_cast<size_t>(q * d + i)] / static_cast<double>(acc.count);
        rope.apply(mu.data());
        double mn = 0;
        for (double m : mu) mn += m * m;
        mn = std::max(std::sqrt(mn), 1e-12);
        double cmax = -INFINITY;
        for (int64_t i = 0; i < n; ++i) {
          double dot = 0;
          for (int64_t b = 0; b < d; ++b) dot += mu[static_cast<size_t>(b)] * keys[static_cast<size_t>((sinks + i) * d + b)];
          const double c = std::clamp(dot / mn / knorm[static_cast<size_t>(i)], -1.0, 1.0);
          w[static_cast<size_t>(i)] = tau_ * c;
          cmax = std::max(cmax, tau_ * c);
        }
        for (auto& wi : w) wi = std::exp(wi - cmax);
        // A = I + Σ (w + eps) v vᵀ (one GEMM over the rows sqrt(w + eps) v), then A⁻¹ by Cholesky.
        std::vector<float> u(static_cast<size_t>(n * dv));
        for (int64_t i = 0; i < n; ++i) {
          const float* vi = vals.data() + (sinks + i) * dv;
          const double r = std::sqrt(w[static_cast<size_t>(i)] + eps_);
          for (int64_t c = 0; c < dv; ++c) u[static_cast<size_t>(i * dv + c)] = static_cast<float>(r * vi[c]);
        }
        std::fill(a.begin(), a.end(), 0.0);
        for (int64_t r = 0; r < dv; ++r) a[static_cast<size_t>(r * dv + r)] = 1.0;
        qstats::add_gram(u.data(), n, dv, dv, a.data());
        if (!qstats::cholesky(a, dv)) throw Error("cap: capacity matrix is not positive definite in layer " + std::to_string(v.layer));
        std::vector<double> inv(static_cast<size_t>(dv * dv), 0.0);
        for (int64_t c = 0; c < dv; ++c) {
          std::fill(x.begin(), x.end(), 0.0);
          x[static_cast<size_t>(c)] = 1.0;
          qstats::cholesky_solve(a, dv, x.data());
          for (int64_t r = 0; r < dv; ++r) inv[static_cast<size_t>(r * dv + c)] = x[static_cast<size_t>(r)];
        }
        // Leverage v_i^T A⁻¹ v_i of every slot at once.
        const std::vector<double> lev = qstats::quadratic_forms(inv.data(), vals.data() + sinks * dv, n, dv);
        for (int64_t i = 0; i < n; ++i)
          mean[static_cast<size_t>(i)] += w[static_cast<size_t>(i)] * lev[static_cast<size_t>(i)] / static_cast<double>(group);
      }
      for (int64_t i = 0; i < n; ++i) s[static_cast<size_t>(sinks + i)] = static_cast<float>(mean[static_cast<size_t>(i)]);
    }
    return out;
  }

 private:
  struct Acc {
    int64_t rows = 0, count = 0;
    std::vector<double> sum;
  };
  double tau_;
  int64_t n_future_, n_sink_;
  double eps_;
  std::map<int64_t, Acc> acc_;
};

}  // namespace

void register_cap_press() {
  using O = CapOptions;
  register_press<O>({"cap", "Capacity-aware leverage of values weighted by alignment with a query anchor (CAPKV).", {}, 0,
                     "As kvpress: epsilon enters only A = I + Σ (w+eps) v vᵀ, the score uses w without it. "
                     "Query sums are accumulated over prefill chunks; A is factored in double precision (Cholesky)."},
                    {field("tau", &O::tau, 0, 1e6, "temperature of the weights exp(tau·(cos(mu_q, k) − max))"),
                     field("n_future_positions", &O::n_future_positions, 1, 1e7, "future positions whose mean RoPE rotation is applied to the query anchor"),
                     field("n_sink", &O::n_sink, 0, 1e6, "first slots kept (attention sinks); their queries are left out of the anchor"),
                     field("epsilon", &O::epsilon, 0, 1e6, "added to the weights inside the capacity matrix only (as kvpress)")},
                    [](const O& o) { return std::make_unique<CapPress>(o.tau, o.n_future_positions, o.n_sink, o.epsilon); });
}

}  // namespace kvsqueeze
