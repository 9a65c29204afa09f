#pragma once
// Shared maths of the query-statistics scorers (expected_attention, cap, non_causal_attn,
// compactor): context queries gathered over prefill chunks, the average future RoPE rotation,
// small dense linear algebra (Cholesky, SPD inverse) and the whole-tensor z-score.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "backend/host_math.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"

namespace kvsqueeze::qstats {

// True when the chunk behind `v` starts the runs of its layer (a new context): state gathered
// for an earlier context must be dropped.
inline bool starts_context(const LayerView& v) {
  if (v.n_head_kv() == 0 || v.stats.positions.empty()) return true;
  const auto pos = v.positions(0);
  return pos.empty() || pos.front() == v.stats.positions.front();
}

// Asks for every row's pre-RoPE queries (after q_norm) of each chunk.
inline StatsRequest all_query_rows() { return {.pre_rope_query_rows = int64_t{1} << 40}; }
// Whether the view's statistics hold what all_query_rows() asks for: the pre-RoPE queries of
// every row of its chunk.
inline bool has_all_query_rows(const LayerView& v) {
  const auto& st = v.stats;
  return st.pre_rope_rows == static_cast<int64_t>(st.positions.size()) &&
         static_cast<int64_t>(st.pre_rope_queries.size()) == st.pre_rope_rows * v.config().n_head * v.head_dim_k();
}

// Pre-RoPE queries of every context row of each observed layer, in order, with positions.
struct QueryLog {
  struct Layer {
    std::vector<float> q;  // rows x n_head x d
    std::vector<int32_t> pos;
  };
  std::map<int64_t, Layer> layers;
  void observe(const LayerView& v) {
    if (v.config().layer_sliding[static_cast<size_t>(v.layer)]) return;  // never compressed
    const auto& st = v.stats;
    if (!has_all_query_rows(v)) throw Error("internal: pre-RoPE queries of every row were not computed for layer " + std::to_string(v.layer));
    auto& l = layers[v.layer];
    if (starts_context(v)) l = Layer{};
    l.q.insert(l.q.end(), st.pre_rope_queries.begin(), st.pre_rope_queries.end());
    l.pos.insert(l.pos.end(), st.positions.begin(), st.positions.end());
  }
  const Layer& at(const LayerView& v, const char* press) const {
    const auto it = layers.find(v.layer);
    if (it == layers.end()) throw Error(std::string(press) + ": layer " + std::to_string(v.layer) + " was not observed");
    return it->second;
  }
};

// Channel pairs rotated together by the engine's RoPE: (i, i+d/2) (neox) or (2i, 2i+1).
inline std::pair<int64_t, int64_t> rope_pair(int64_t i, int64_t d, bool neox) {
  return neox ? std::pair<int64_t, int64_t>{i, i + d / 2} : std::pair<int64_t, int64_t>{2 * i, 2 * i + 1};
}

// The mean rotation over positions [first, first + n): one 2x2 block [[C,-S],[S,C]] per
// channel pair, C/S the mean cos/sin (theta = pos * inv_freq in fp32, as the forward pass).
struct AvgRope {
  int64_t d = 0;
  bool neox = false;
  std::vector<double> c, s;
  AvgRope(const LayerView& v, int64_t first, int64_t n) : d(v.head_dim_k()), neox(v.config().rope_neox) {
    const auto freq = v.inv_freq();
    const int64_t half = d / 2;
    c.assign(static_cast<size_t>(half), 0.0);
    s.assign(static_cast<size_t>(half), 0.0);
    for (int64_t p = first; p < first + n; ++p)
      for (int64_t i = 0; i < half; ++i) {
        const float theta = static_cast<float>(p) * freq[static_cast<size_t>(i)];
        c[static_cast<size_t>(i)] += std::cos(theta);
        s[static_cast<size_t>(i)] += std::sin(theta);
      }
    for (int64_t i = 0; i < half; ++i) {
      c[static_cast<size_t>(i)] /= static_cast<double>(std::max<int64_t>(1, n));
      s[static_cast<size_t>(i)] /= static_cast<double>(std::max<int64_t>(1, n));
    }
  }
  // x <- R x (x strided by `stride`, d entries).
  void apply(double* x, int64_t stride = 1) const {
    for (int64_t i = 0; i < d / 2; ++i) {
      const auto [a, b] = rope_pair(i, d, neox);
      const double xa = x[a * stride], xb = x[b * stride], ci = c[static_cast<size_t>(i)], si = s[static_cast<size_t>(i)];
      x[a * stride] = ci * xa - si * xb;
      x[b * stride] = si * xa + ci * xb;
    }
  }
  // m (d x d, row-major) <- R m R^T.
  void apply_both(double* m) const {
    for (int64_t col = 0; col < d; ++col) apply(m + col, d);  // R m: rotate every column
    for (int64_t row = 0; row < d; ++row) apply(m + row * d);  // (R m) R^T: rotate every row
  }
};

// Lower Cholesky factor of the SPD n x n matrix `a` (row-major) in place; false if not SPD.
// y[t * n_w + r] = x_t . w_r for fp32 rows of width d, on the matmul kernels (the heavy part of
// several scorers: Gram matrices, quadratic forms, chunk attention logits).
inline void dot_rows(const float* w, int64_t n_w, const float* x, int64_t n_x, int64_t d, float* y) {
  WeightMatrix m;
  m.type = TensorType::F32;
  m.data = reinterpret_cast<const uint8_t*>(w);
  m.rows = n_w;
  m.cols = d;
  m.row_bytes = static_cast<size_t>(d) * sizeof(float);
  host::matmul(m, x, n_x, y);
}

// Adds sum_t x_t x_t^T of n rows (row t at rows + t * stride, d wide) to out (d x d, double).
inline void add_gram(const float* rows, int64_t n, int64_t stride, int64_t d, double* out) {
  if (n <= 0) return;
  std::vector<float> xt(static_cast<size_t>(d * n)), g(static_cast<size_t>(d * d));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < d; ++i) xt[static_cast<size_t>(i * n + t)] = rows[t * stride + i];
  dot_rows(xt.data(), d, xt.data(), d, n, g.data());  // X^T X
  for (int64_t i = 0; i < d * d; ++i) out[i] += g[static_cast<size_t>(i)];
}

// x_i^T C x_i for n rows (n x d floats); C symmetric d x d (double).
inline std::vector<double> quadratic_forms(const double* c, const float* rows, int64_t n, int64_t d) {
  std::vector<double> out(static_cast<size_t>(n));
  if (n <= 0) return out;
  std::vector<float> cf(c, c + d * d), cx(static_cast<size_t>(n * d));
  dot_rows(cf.data(), d, rows, n, d, cx.data());  // row i: C x_i
  for (int64_t i = 0; i < n; ++i) {
    double quad = 0;
    for (int64_t a = 0; a < d; ++a) quad += static_cast<double>(rows[i * d + a]) * cx[static_cast<size_t>(i * d + a)];
    out[static_cast<size_t>(i)] = quad;
  }
  return out;
}

inline bool cholesky(std::vector<double>& a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double diag = a[static_cast<size_t>(j * n + j)];
    for (int64_t k = 0; k < j; ++k) diag -= a[static_cast<size_t>(j * n + k)] * a[static_cast<size_t>(j * n + k)];
    if (!(diag > 0.0)) return false;
    const double l = std::sqrt(diag);
    a[static_cast<size_t>(j * n + j)] = l;
    for (int64_t i = j + 1; i < n; ++i) {
      double x = a[static_cast<size_t>(i * n + j)];
      for (int64_t k = 0; k < j; ++k) x -= a[static_cast<size_t>(i * n + k)] * a[static_cast<size_t>(j * n + k)];
      a[static_cast<size_t>(i * n + j)] = x / l;
    }
    for (int64_t i = 0; i < j; ++i) a[static_cast<size_t>(i * n + j)] = 0.0;
  }
  return true;
}

// Solves L L^T x = b in place given the lower factor L.
inline void cholesky_solve(const std::vector<double>& l, int64_t n, double* b) {
  for (int64_t i = 0; i < n; ++i) {
    double x = b[i];
    for (int64_t k = 0; k < i; ++k) x -= l[static_cast<size_t>(i * n + k)] * b[k];
    b[i] = x / l[static_cast<size_t>(i * n + i)];
  }
  for (int64_t i = n - 1; i >= 0; --i) {
    double x = b[i];
    for (int64_t k = i + 1; k < n; ++k) x -= l[static_cast<size_t>(k * n + i)] * b[k];
    b[i] = x / l[static_cast<size_t>(i * n + i)];
  }
}

// z-score over every score of every head at once (torch: unbiased std, clamped >= 1e-6).
inline void zscore_all(LayerScores& s) {
  double sum = 0, n = 0;
  for (const auto& h : s)
    for (float x : h) sum += x, n += 1;
  if (n == 0) return;
  const double mean = sum / n;
  double ss = 0;
  for (const auto& h : s)
    for (float x : h) ss += (x - mean) * (x - mean);
  const double sd = n > 1 ? std::max(std::sqrt(ss / (n - 1)), 1e-6) : 1e-6;
  for (auto& h : s)
    for (auto& x : h) x = static_cast<float>((x - mean) / sd);
}

// avg_pool1d(kernel 3, stride 1, padding 1, zero padding counted in the mean).
inline std::vector<float> avg_pool3(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  const auto n = static_cast<int64_t>(x.size());
  for (int64_t i = 0; i < n; ++i) {
    double sum = 0;
    for (int64_t k = i - 1; k <= i + 1; ++k)
      if (k >= 0 && k < n) sum += x[static_cast<size_t>(k)];
    out[static_cast<size_t>(i)] = static_cast<float>(sum / 3.0);
  }
  return out;
}

// Counter-based standard normal draw keyed by (seed, a, b, index): splitmix64 + Box-Muller.
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
inline double normal_draw(uint64_t seed, uint64_t a, uint64_t b, uint64_t index) {
  const uint64_t key = mix64(mix64(mix64(seed) ^ a) ^ (b << 32 | (index >> 32))) ^ (index & 0xffffffffULL);
  const uint64_t r1 = mix64(key), r2 = mix64(key ^ 0xd1b54a32d192ed03ULL);
  const double u1 = (static_cast<double>(r1 >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
  const double u2 = static_cast<double>(r2 >> 11) * 0x1.0p-53;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

}  // namespace kvsqueeze::qstats
