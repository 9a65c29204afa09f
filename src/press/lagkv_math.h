#pragma once
// LagKV scoring (arXiv 2504.04704; docs/METHODS.md §3.9), header-only so that tests can check it on
// hand-made partitions. A region of m full partitions of `lag` rows is scored partition by
// partition against the NEXT one: per channel, lo/hi are the min/max over the next partition's
// rows; each row's score is the unbiased standard deviation over its channels of
// (x - lo) / (hi - lo), and a softmax over the lag rows of the partition turns those into weights
// that sum to 1. Keys and values are scored separately and combined.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace kvsqueeze::lagkv {

struct Params {
  int64_t lag = 128;
  // Guard of the per-channel range, max(hi - lo, eps). 0: the raw upstream formula, where a
  // constant channel of the next partition divides by zero (inf/NaN scores; NaN ranks lowest).
  double eps = 1e-6;
  bool kvpress_mean = true;   // kvpress: (s_K + s_V) / 2; LagKV: s_K + score_v_ratio * s_V
  double score_v_ratio = 1.0;
  bool ranks = false;         // kvpress without cross_scoring: within-partition rank / lag
};

// Scores of the `lag` rows of partition x (lag x d, row-major) relative to the next partition
// `ref` (lag x d). Computed in double, returned as fp32.
inline std::vector<float> partition_scores(const float* x, const float* ref, int64_t lag, int64_t d, double eps) {
  std::vector<double> lo(static_cast<size_t>(d), INFINITY), hi(static_cast<size_t>(d), -INFINITY);
  for (int64_t t = 0; t < lag; ++t)
    for (int64_t c = 0; c < d; ++c) {
      const double r = ref[t * d + c];
      lo[static_cast<size_t>(c)] = std::min(lo[static_cast<size_t>(c)], r);
      hi[static_cast<size_t>(c)] = std::max(hi[static_cast<size_t>(c)], r);
    }
  std::vector<double> u(static_cast<size_t>(lag));
  std::vector<double> z(static_cast<size_t>(d));
  for (int64_t t = 0; t < lag; ++t) {
    double mean = 0;
    for (int64_t c = 0; c < d; ++c) {
      double range = hi[static_cast<size_t>(c)] - lo[static_cast<size_t>(c)];
      if (eps > 0) range = std::max(range, eps);
      z[static_cast<size_t>(c)] = (x[t * d + c] - lo[static_cast<size_t>(c)]) / range;
      mean += z[static_cast<size_t>(c)];
    }
    mean /= static_cast<double>(d);
    double ss = 0;
    for (int64_t c = 0; c < d; ++c) ss += (z[static_cast<size_t>(c)] - mean) * (z[static_cast<size_t>(c)] - mean);
    u[static_cast<size_t>(t)] = d > 1 ? std::sqrt(ss / static_cast<double>(d - 1)) : NAN;  // unbiased, as torch.std
  }
  double mx = -INFINITY;
  for (double a : u) mx = std::max(mx, a);  // NaN is skipped here and propagates through exp below
  double sum = 0;
  for (double& a : u) sum += (a = std::exp(a - mx));
  std::vector<float> out(static_cast<size_t>(lag));
  for (int64_t t = 0; t < lag; ++t) out[static_cast<size_t>(t)] = static_cast<float>(u[static_cast<size_t>(t)] / sum);
  return out;
}

// Ranks of one partition's scores divided by lag (kvpress: argsort().argsort() / lag): the
// lowest score gets 0, the highest (lag-1)/lag. NaN ranks lowest; equal scores: the later row
// ranks higher.
inline std::vector<float> rank_scores(const float* s, int64_t lag) {
  std::vector<int64_t> order(static_cast<size_t>(lag));
  std::iota(order.begin(), order.end(), 0);
  auto key = [&](int64_t i) { return std::isnan(s[i]) ? -INFINITY : s[i]; };
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return key(a) < key(b) || (key(a) == key(b) && a < b); });
  std::vector<float> out(static_cast<size_t>(lag));
  for (int64_t r = 0; r < lag; ++r) out[static_cast<size_t>(order[static_cast<size_t>(r)])] = static_cast<float>(r) / static_cast<float>(lag);
  return out;
}

// Scores of partitions 0..m-2 of the rows [0, m*lag) of one head (keys n x dk, values n x dv,
// row-major, n >= m*lag, m >= 2): (m-1)*lag scores, partition c scored against c+1.
inline std::vector<float> region_scores(const float* k, int64_t dk, const float* v, int64_t dv, int64_t m, const Params& p) {
  const int64_t lag = p.lag;
  std::vector<float> out;
  out.reserve(static_cast<size_t>((m - 1) * lag));
  for (int64_t c = 0; c + 1 < m; ++c) {
    const auto sk = partition_scores(k + c * lag * dk, k + (c + 1) * lag * dk, lag, dk, p.eps);
    const auto sv = partition_scores(v + c * lag * dv, v + (c + 1) * lag * dv, lag, dv, p.eps);
    std::vector<float> s(static_cast<size_t>(lag));
    for (size_t t = 0; t < s.size(); ++t)
      s[t] = p.kvpress_mean ? (sk[t] + sv[t]) / 2.0f : static_cast<float>(sk[t] + p.score_v_ratio * sv[t]);
    if (p.ranks) s = rank_scores(s.data(), lag);
    out.insert(out.end(), s.begin(), s.end());
  }
  return out;
}

// LagKV's kept count per scored partition: floor((1 - cr) * lag + 1e-9), cr the fraction removed
// (the epsilon absorbs float residue such as 0.2 * 128 = 25.599...). The LagKV repository keeps
// int(ratio * lag) with ratio the fraction kept, which its own float residue can put one below
// the exact floor (0.29 * 100 = 28.999999999999996 -> 28); this keeps the exact floor
// (tests/lagkv_upstream_test.cpp, KeptPerPartition).
inline int64_t keep_per_partition(double ratio, int64_t lag) {
  const auto k = static_cast<int64_t>(std::floor((1.0 - ratio) * static_cast<double>(lag) + 1e-9));
  return std::clamp<int64_t>(k, 0, lag);
}

// The top k rows of each partition of `scores` (partitions of lag rows), as row indices into
// scores, ascending. NaN lowest; equal scores: the later row first.
inline std::vector<int32_t> top_k_per_partition(const std::vector<float>& scores, int64_t lag, int64_t k) {
  std::vector<int32_t> out;
  const auto parts = static_cast<int64_t>(scores.size()) / lag;
  for (int64_t c = 0; c < parts; ++c) {
    std::vector<int32_t> idx(static_cast<size_t>(lag));
    std::iota(idx.begin(), idx.end(), static_cast<int32_t>(c * lag));
    auto key = [&](int32_t i) {
      const float x = scores[static_cast<size_t>(i)];
      return std::isnan(x) ? -INFINITY : x;
    };
    std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return key(a) > key(b) || (key(a) == key(b) && a > b); });
    idx.resize(static_cast<size_t>(k));
    std::sort(idx.begin(), idx.end());
    out.insert(out.end(), idx.begin(), idx.end());
  }
  return out;
}

}  // namespace kvsqueeze::lagkv
