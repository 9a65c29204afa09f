#pragma once
// Approximate leverage scores of key rows under a right Gaussian sketch (kvpress
// LeverageScorePress, docs/METHODS.md §3.11), separated from the press so tests can feed the exact
// sketches torch drew (the fixtures store them) and check the maths alone.
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "kvsqueeze/error.h"
#include "press/query_stats.h"

namespace kvsqueeze::leverage {

// Leverage of each row of `keys` (n x d) after centring: X = (K − mean) Φ with Φ (d x k),
// Gm = XᵀX symmetrised, Cholesky of Gm + jI (j = 1e-2, x10 per failure, 5 tries), then
// ℓ_i = x_iᵀ (Gm + jI)⁻¹ x_i clamped at >= 0. In double precision.
inline std::vector<double> scores(const float* keys, int64_t n, int64_t d, const float* phi, int64_t k) {
  std::vector<double> mean(static_cast<size_t>(d), 0.0), x(static_cast<size_t>(n * k), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t a = 0; a < d; ++a) mean[static_cast<size_t>(a)] += keys[i * d + a];
  for (auto& m : mean) m /= static_cast<double>(std::max<int64_t>(1, n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t a = 0; a < d; ++a) {
      const double c = keys[i * d + a] - mean[static_cast<size_t>(a)];
      for (int64_t b = 0; b < k; ++b) x[static_cast<size_t>(i * k + b)] += c * phi[a * k + b];
    }
  std::vector<double> g(static_cast<size_t>(k * k), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t a = 0; a < k; ++a)
      for (int64_t b = 0; b <= a; ++b) g[static_cast<size_t>(a * k + b)] += x[static_cast<size_t>(i * k + a)] * x[static_cast<size_t>(i * k + b)];
  for (int64_t a = 0; a < k; ++a)
    for (int64_t b = a + 1; b < k; ++b) g[static_cast<size_t>(a * k + b)] = g[static_cast<size_t>(b * k + a)];
  std::vector<double> l;
  double jitter = 1e-2;
  bool ok = false;
  for (int attempt = 0; attempt < 5 && !ok; ++attempt, jitter *= 10.0) {
    l = g;
    for (int64_t a = 0; a < k; ++a) l[static_cast<size_t>(a * k + a)] += jitter;
    ok = qstats::cholesky(l, k);
  }
  if (!ok) throw Error("leverage: Cholesky failed after 5 tries");
  std::vector<double> out(static_cast<size_t>(n)), y(static_cast<size_t>(k));
  for (int64_t i = 0; i < n; ++i) {
    const double* xi = x.data() + i * k;
    std::copy(xi, xi + k, y.begin());
    qstats::cholesky_solve(l, k, y.data());
    double s = 0;
    for (int64_t b = 0; b < k; ++b) s += xi[b] * y[static_cast<size_t>(b)];
    out[static_cast<size_t>(i)] = std::max(s, 0.0);
  }
  return out;
}

// kvsqueeze's sketch: Φ (d x k) i.i.d. N(0, 1/k) from the counter-based RNG keyed by
// (seed, layer, head, entry): the same for any evaluation order or thread count.
inline std::vector<float> seeded_sketch(uint64_t seed, int64_t layer, int64_t head, int64_t d, int64_t k) {
  std::vector<float> phi(static_cast<size_t>(d * k));
  for (int64_t i = 0; i < d * k; ++i)
    phi[static_cast<size_t>(i)] = static_cast<float>(
        qstats::normal_draw(seed, static_cast<uint64_t>(layer), static_cast<uint64_t>(head), static_cast<uint64_t>(i)) / std::sqrt(static_cast<double>(k)));
  return phi;
}

// Tests only: where presses take their sketches, (layer, head, d, k, neox) -> d x k rows in the
// engine's channel order (neox false: GGUF's interleaved pairs, HF channel i is ours 2i and
// HF channel i + d/2 ours 2i+1); empty = seeded.
using SketchSource = std::function<std::vector<float>(int64_t layer, int64_t head, int64_t d, int64_t k, bool neox)>;
inline SketchSource& sketch_source() {
  static SketchSource source;
  return source;
}

inline std::vector<float> sketch(uint64_t seed, int64_t layer, int64_t head, int64_t d, int64_t k, bool neox) {
  const auto& src = sketch_source();
  return src ? src(layer, head, d, k, neox) : seeded_sketch(seed, layer, head, d, k);
}

// z-scored leverage of slots [lo, hi) of every head of the layer (pre-RoPE keys).
inline LayerScores layer_scores(const LayerView& v, int64_t lo_slots, int64_t hi_trim, int64_t k, uint64_t seed) {
  LayerScores out(static_cast<size_t>(v.n_head_kv()));
  const int64_t d = v.head_dim_k();
  for (int64_t h = 0; h < v.n_head_kv(); ++h) {
    const int64_t len = v.length(h), lo = std::min(lo_slots, len), hi = std::max(lo, len - hi_trim);
    const std::vector<float> keys = v.pre_rope_keys(h), phi = sketch(seed, v.layer, h, d, k, v.config().rope_neox);
    const auto s = scores(keys.data() + lo * d, hi - lo, d, phi.data(), k);
    out[static_cast<size_t>(h)].assign(s.begin(), s.end());
  }
  qstats::zscore_all(out);
  return out;
}

}  // namespace kvsqueeze::leverage
