#pragma once
// Pyramidal pairwise pooling (the seed, en-jai-neer/kv-cache-compression
// sequence_kv_compress.py; docs/METHODS.md §6.1), header-only so that tests can run it on
// hand-made rows and against the seed's own outputs (tests/fixtures/merging/).
//  - local_window: layer k of m lets W_k = int(L0 (1 + (k/m)(1/beta - 1))) slots stay unmerged.
//  - halve: a span of n rows (n x d, row-major) becomes ceil(n/2) rows; an odd span duplicates
//    its last row. mean (x0+x1)/2, max element-wise, best a per-channel majority vote over the
//    whole span (x0 wins channel c for every pair when #(x0 > x1) >= #pairs - #(x0 > x1)), and
//    weighted_mean (kvsqueeze's own) the mean weighted by how many tokens each row stands for.
//  - A pooled slot takes the position of the later row of its pair (a duplicated row: its own)
//    and stands for the tokens of both rows (a duplicated row: its own tokens only).
//  - prefill: rws = sink; while len - rws > W: halve [sink, rws + W), rws = sink + halved.
//    decode_step: when len - rws > W, halve all of [sink, len) once, rws = len.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace kvsqueeze::pyramid_merge {

enum class Pooling { Mean, Max, Best, WeightedMean };

inline Pooling parse_pooling(const std::string& s) {
  if (s == "mean") return Pooling::Mean;
  if (s == "max") return Pooling::Max;
  if (s == "best") return Pooling::Best;
  if (s == "weighted_mean") return Pooling::WeightedMean;
  throw std::invalid_argument("unknown pooling '" + s + "'");
}

// W_k of layer k of m, in the seed's order of operations (Python floats are doubles; int()
// truncates). Clamped to [1, 2^31-1]: a window of 0 (beta > 1 with a tiny L0) would make the
// seed's prefill loop halve an empty span forever.
inline int64_t local_window(int64_t l0, double beta, int64_t layer, int64_t n_layer) {
  const double w = static_cast<double>(l0) *
                   (1.0 + static_cast<double>(layer) / static_cast<double>(n_layer) * (1.0 / beta - 1.0));
  if (!(w >= 1.0)) return 1;
  if (w >= 2147483647.0) return 2147483647;
  return static_cast<int64_t>(std::trunc(w));
}

// Halves n rows of d channels (row-major). `counts` (n tokens per row) is used by weighted_mean only.
inline std::vector<float> halve(std::span<const float> x, int64_t n, int64_t d, Pooling p, std::span<const float> counts = {}) {
  const int64_t pairs = (n + 1) / 2;
  std::vector<float> out(static_cast<size_t>(pairs * d));
  auto row = [&](int64_t i) { return x.data() + std::min(i, n - 1) * d; };  // row n (odd n) duplicates row n-1
  auto count = [&](int64_t i) { return counts.empty() ? 1.0f : counts[static_cast<size_t>(std::min(i, n - 1))]; };
  std::vector<char> first_wins;
  if (p == Pooling::Best) {
    first_wins.assign(static_cast<size_t>(d), 0);
    for (int64_t c = 0; c < d; ++c) {
      int64_t first = 0;
      for (int64_t i = 0; i < pairs; ++i) first += row(2 * i)[c] > row(2 * i + 1)[c] ? 1 : 0;
      first_wins[static_cast<size_t>(c)] = first >= pairs - first ? 1 : 0;
    }
  }
  for (int64_t i = 0; i < pairs; ++i) {
    const float* a = row(2 * i);
    const float* b = row(2 * i + 1);
    float* o = out.data() + i * d;
    const bool dup = 2 * i + 1 >= n;
    for (int64_t c = 0; c < d; ++c) {
      switch (p) {
        case Pooling::Mean: o[c] = (a[c] + b[c]) / 2.0f; break;
        case Pooling::Max: o[c] = std::max(a[c], b[c]); break;
        case Pooling::Best: o[c] = first_wins[static_cast<size_t>(c)] ? a[c] : b[c]; break;
        case Pooling::WeightedMean: {
          if (dup) {
            o[c] = a[c];
          } else {
            const float ca = count(2 * i), cb = count(2 * i + 1);
            o[c] = (ca * a[c] + cb * b[c]) / (ca + cb);
          }
          break;
        }
      }
    }
  }
  return out;
}

// Tokens each pooled row stands for: the sum over its pair (a duplicated row: its own).
inline std::vector<float> halve_counts(std::span<const float> counts) {
  const auto n = static_cast<int64_t>(counts.size());
  std::vector<float> out(static_cast<size_t>((n + 1) / 2));
  for (int64_t i = 0; 2 * i < n; ++i)
    out[static_cast<size_t>(i)] = counts[static_cast<size_t>(2 * i)] + (2 * i + 1 < n ? counts[static_cast<size_t>(2 * i + 1)] : 0.0f);
  return out;
}

// Positions of the pooled rows: the later of each pair (a duplicated row: its own).
inline std::vector<int32_t> halve_positions(std::span<const int32_t> pos) {
  const auto n = static_cast<int64_t>(pos.size());
  std::vector<int32_t> out(static_cast<size_t>((n + 1) / 2));
  for (int64_t i = 0; 2 * i < n; ++i) out[static_cast<size_t>(i)] = pos[static_cast<size_t>(std::min(2 * i + 1, n - 1))];
  return out;
}

// One KV head's run: keys (len x dk), values (len x dv), positions and tokens per slot.
struct Run {
  int64_t dk = 0, dv = 0;
  std::vector<float> k, v, count;
  std::vector<int32_t> pos;
  int64_t len() const { return static_cast<int64_t>(pos.size()); }
};

// Replaces slots [first, end) of r by their halved rows (keys and values pooled separately).
inline void halve_range(Run& r, int64_t first, int64_t end, Pooling p) {
  const int64_t n = end - first;
  if (n <= 0) return;
  const auto cnt = std::span<const float>(r.count).subspan(static_cast<size_t>(first), static_cast<size_t>(n));
  const auto k = halve(std::span<const float>(r.k).subspan(static_cast<size_t>(first * r.dk), static_cast<size_t>(n * r.dk)), n, r.dk, p, cnt);
  const auto v = halve(std::span<const float>(r.v).subspan(static_cast<size_t>(first * r.dv), static_cast<size_t>(n * r.dv)), n, r.dv, p, cnt);
  const auto c = halve_counts(cnt);
  const auto ps = halve_positions(std::span<const int32_t>(r.pos).subspan(static_cast<size_t>(first), static_cast<size_t>(n)));
  auto splice = [&](auto& vec, const auto& rows, int64_t width) {
    vec.erase(vec.begin() + first * width, vec.begin() + end * width);
    vec.insert(vec.begin() + first * width, rows.begin(), rows.end());
  };
  splice(r.k, k, r.dk);
  splice(r.v, v, r.dv);
  splice(r.count, c, 1);
  splice(r.pos, ps, 1);
}

struct PrefillResult {
  int64_t rws = 0;         // where the next uncompressed window starts (slot index)
  int64_t halvings = 0;    // loop iterations
  int64_t rest_begin = 0;  // the run's original slots from here on were left as they were
};

// The seed's prefill loop (compress_prefill) on one run, then its bookkeeping: rws = len when
// the loop halved anything (as coded), else it stays at sink.
inline PrefillResult prefill(Run& r, int64_t sink, int64_t w, Pooling p) {
  PrefillResult res;
  int64_t rws = sink;
  int64_t shift = 0;  // original index - current index of the untouched rest
  res.rest_begin = r.len();
  while (r.len() - rws > w) {
    const int64_t end = rws + w;
    const int64_t before = r.len();
    res.rest_begin = end + shift;  // `end` in original indices
    halve_range(r, sink, end, p);
    shift += before - r.len();
    rws = sink + (end - sink + 1) / 2;
    ++res.halvings;
  }
  res.rws = res.halvings > 0 ? r.len() : sink;
  return res;
}

// The seed's decoding rule, post-sink only (the seed also pools its sinks: docs/METHODS.md §6.1):
// when more than w slots lie past rws, halve all of [sink, len) once and set rws = len.
inline bool decode_step(Run& r, int64_t& rws, int64_t sink, int64_t w, Pooling p) {
  if (r.len() - rws <= w || r.len() <= sink) return false;
  halve_range(r, sink, r.len(), p);
  rws = r.len();
  return true;
}

}  // namespace kvsqueeze::pyramid_merge
