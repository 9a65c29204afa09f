#include "press/merge_math.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "kvsqueeze/error.h"
#include "kvsqueeze/session.h"

namespace kvsqueeze::merge {
namespace {

constexpr float kEps = 1e-6f;  // kvpress _EPS: norm clamp and weight denominator

float norm(const float* x, int64_t d) {
  float s = 0.0f;
  for (int64_t i = 0; i < d; ++i) s += x[i] * x[i];
  return std::sqrt(s);
}

HeadMerge unchanged(std::span<const float> values, int64_t dv, std::span<const int32_t> kept) {
  HeadMerge m;
  m.values.resize(kept.size() * static_cast<size_t>(dv));
  for (size_t j = 0; j < kept.size(); ++j)
    std::copy_n(values.begin() + static_cast<std::ptrdiff_t>(kept[j]) * dv, dv, m.values.begin() + static_cast<std::ptrdiff_t>(j) * dv);
  m.changed.assign(kept.size(), 0);
  return m;
}

}  // namespace

float torch_quantile(std::vector<float> x, double q) {
  if (x.empty()) return std::numeric_limits<float>::quiet_NaN();
  if (std::any_of(x.begin(), x.end(), [](float v) { return std::isnan(v); })) return std::numeric_limits<float>::quiet_NaN();
  std::sort(x.begin(), x.end());
  const float rank = static_cast<float>(q) * static_cast<float>(x.size() - 1);
  const auto below = static_cast<size_t>(rank), above = static_cast<size_t>(std::ceil(rank));
  const float w = rank - static_cast<float>(below);
  const float a = x[below], b = x[std::min(above, x.size() - 1)];
  return std::fabs(w) < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
}

HeadMerge similarity_merge(std::span<const float> keys, int64_t dk, std::span<const float> values, int64_t dv,
                           std::span<const int32_t> kept, double threshold, double fraction) {
  HeadMerge m = unchanged(values, dv, kept);
  const auto len = static_cast<int64_t>(values.size()) / dv;
  const std::vector<int32_t> evicted = complement(kept, len);
  if (evicted.empty() || kept.empty()) return m;
  // Unit keys (norms clamped), kept then evicted.
  auto unit = [&](int32_t slot) {
    std::vector<float> u(keys.begin() + static_cast<std::ptrdiff_t>(slot) * dk, keys.begin() + static_cast<std::ptrdiff_t>(slot + 1) * dk);
    const float n = std::max(norm(u.data(), dk), kEps);
    for (auto& x : u) x /= n;
    return u;
  };
  std::vector<std::vector<float>> kk;
  for (int32_t t : kept) kk.push_back(unit(t));
  const size_t ne = evicted.size();
  std::vector<float> sim(ne);
  std::vector<size_t> target(ne);
  for (size_t e = 0; e < ne; ++e) {
    const std::vector<float> ke = unit(evicted[e]);
    float best = -std::numeric_limits<float>::infinity();
    size_t arg = 0;
    for (size_t j = 0; j < kk.size(); ++j) {
      float dot = 0.0f;
      for (int64_t i = 0; i < dk; ++i) dot += ke[static_cast<size_t>(i)] * kk[j][static_cast<size_t>(i)];
      if (dot > best || j == 0) best = dot, arg = j;
    }
    sim[e] = best;
    target[e] = arg;
  }
  // Threshold gate, then the fraction gate over this head's similarities (failed ones at -inf).
  const auto thr = static_cast<float>(threshold);
  std::vector<char> ok(ne);
  bool any = false;
  for (size_t e = 0; e < ne; ++e) any |= (ok[e] = sim[e] >= thr);
  if (fraction < 1.0 && any) {
    std::vector<float> masked(ne);
    for (size_t e = 0; e < ne; ++e) masked[e] = ok[e] ? sim[e] : -std::numeric_limits<float>::infinity();
    const float q = torch_quantile(std::move(masked), 1.0 - fraction);
    for (size_t e = 0; e < ne; ++e) ok[e] = ok[e] && sim[e] >= q;  // NaN thresholds merge nothing
  }
  std::vector<float> acc(kept.size() * static_cast<size_t>(dv), 0.0f), wacc(kept.size(), 0.0f);
  for (size_t e = 0; e < ne; ++e) {
    const float* ve = values.data() + static_cast<std::ptrdiff_t>(evicted[e]) * dv;
    const float* vt = m.values.data() + static_cast<std::ptrdiff_t>(target[e]) * dv;
    const float en = norm(ve, dv), tn = norm(vt, dv);
    float w = std::max(sim[e], 0.0f) * (ok[e] ? 1.0f : 0.0f);
    w = w * en / (en + tn + kEps);
    float* a = acc.data() + static_cast<std::ptrdiff_t>(target[e]) * dv;
    for (int64_t i = 0; i < dv; ++i) a[i] += w * ve[i];
    wacc[target[e]] += w;
  }
  for (size_t j = 0; j < kept.size(); ++j) {
    if (!(wacc[j] > 0.0f)) continue;
    float* v = m.values.data() + static_cast<std::ptrdiff_t>(j) * dv;
    const float* a = acc.data() + static_cast<std::ptrdiff_t>(j) * dv;
    for (int64_t i = 0; i < dv; ++i) v[i] = (v[i] + a[i]) / (1.0f + wacc[j]);
    m.changed[j] = 1;
  }
  return m;
}

HeadMerge cam_merge(std::span<const float> values, int64_t dv, std::span<const int32_t> kept, std::span<const int32_t> candidates,
                    std::span<const float> abar, int64_t merge_budget, std::span<const double> uniforms, std::vector<float>* prob) {
  HeadMerge m = unchanged(values, dv, kept);
  if (prob) prob->assign(candidates.size(), 0.0f);
  if (uniforms.size() < candidates.size()) throw Error("internal: cam_merge needs one draw per candidate");
  for (size_t c = 0; c < candidates.size(); ++c) {
    const int32_t i = candidates[c];
    const auto start = static_cast<size_t>(std::upper_bound(kept.begin(), kept.end(), i) - kept.begin());
    const size_t end = std::min(kept.size(), start + static_cast<size_t>(merge_budget));
    const size_t count = end - start;
    float sum = 0.0f;
    for (size_t j = start; j < end; ++j) sum += abar[static_cast<size_t>(kept[j])];
    const float mean = sum / static_cast<float>(std::max<size_t>(count, 1));
    float p = abar[static_cast<size_t>(i)] / mean;
    if (std::isnan(p)) p = 0.0f;
    else if (std::isinf(p)) p = 1.0f;
    p = std::clamp(p, 0.0f, 1.0f);
    if (prob) (*prob)[c] = p;
    if (count == 0 || !(uniforms[c] < static_cast<double>(p))) continue;
    const float scale = 1.0f / static_cast<float>(count);
    const float* vi = values.data() + static_cast<std::ptrdiff_t>(i) * dv;
    for (size_t j = start; j < end; ++j) {
      float* v = m.values.data() + static_cast<std::ptrdiff_t>(j) * dv;
      for (int64_t x = 0; x < dv; ++x) v[x] += vi[x] * scale;
      m.changed[j] = 1;
    }
  }
  return m;
}

std::vector<int32_t> best_evicted(std::span<const float> scores, std::span<const int32_t> evicted, int64_t k) {
  std::vector<int32_t> out(evicted.begin(), evicted.end());
  if (k >= static_cast<int64_t>(out.size())) return out;
  if (k <= 0) return {};
  if (scores.empty()) {
    out.erase(out.begin(), out.end() - k);
    return out;
  }
  auto key = [&](int32_t i) {
    const float s = scores[static_cast<size_t>(i)];
    return std::isnan(s) ? -std::numeric_limits<float>::infinity() : s;
  };
  std::stable_sort(out.begin(), out.end(), [&](int32_t a, int32_t b) { return key(a) > key(b) || (key(a) == key(b) && a > b); });
  out.resize(static_cast<size_t>(k));
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<int32_t> complement(std::span<const int32_t> kept, int64_t len) {
  std::vector<char> in(static_cast<size_t>(len), 0);
  for (int32_t i : kept) in.at(static_cast<size_t>(i)) = 1;
  std::vector<int32_t> out;
  for (int64_t i = 0; i < len; ++i)
    if (!in[static_cast<size_t>(i)]) out.push_back(static_cast<int32_t>(i));
  return out;
}

CamRng::CamRng(uint64_t seed, int64_t layer, int64_t head, int64_t event) {
  std::seed_seq key{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(layer), static_cast<uint32_t>(head),
                    static_cast<uint32_t>(event)};
  gen_.seed(key);
}

LayerScores ValueMergeWrapper::score(const LayerView&) {
  throw Error("press '" + name_ + "' merges values when it compresses and has no scores of its own: put it outermost, e.g. " + name_ +
              "(adakv(snapkv)), not inside another wrapper");
}

KeepSets ValueMergeWrapper::select(const LayerView& view, const Budget&) { return score(view), KeepSets{}; }

LayerSnapshot ValueMergeWrapper::snapshot(const LayerView& view) const {
  LayerSnapshot snap(static_cast<size_t>(view.n_head_kv()));
  for (int64_t h = 0; h < view.n_head_kv(); ++h) {
    auto& s = snap[static_cast<size_t>(h)];
    if (snapshot_keys_) s.keys = view.keys(h);
    s.values = view.values(h);
    const auto p = view.positions(h);
    s.positions.assign(p.begin(), p.end());
  }
  return snap;
}

void ValueMergeWrapper::write_values(KvCache& cache, int64_t layer, int64_t head, const HeadMerge& m, int64_t dv) {
  for (size_t j = 0; j < m.changed.size(); ++j)
    if (m.changed[j])
      cache.rewrite_rows(layer, head, static_cast<int64_t>(j), 1, nullptr, m.values.data() + static_cast<std::ptrdiff_t>(j) * dv, nullptr);
}

KeepSets ValueMergeWrapper::compress(const LayerView& view, const Budget& budget, KvCache& cache) {
  const LayerSnapshot snap = snapshot(view);
  before_compress(view);
  KeepSets keep = inner_->compress(view, budget, cache);
  next_position_ = inner_->next_position();
  if (static_cast<int64_t>(keep.size()) != view.n_head_kv())
    throw Error("internal: press '" + inner_->name() + "' returned " + std::to_string(keep.size()) + " keep sets for " +
                std::to_string(view.n_head_kv()) + " heads");
  for (int64_t h = 0; h < view.n_head_kv(); ++h)
    if (static_cast<int64_t>(keep[static_cast<size_t>(h)].size()) != cache.length(view.layer, h))
      throw Error("internal: press '" + inner_->name() + "' kept " + std::to_string(keep[static_cast<size_t>(h)].size()) +
                  " slots of layer " + std::to_string(view.layer) + " head " + std::to_string(h) + " but the cache holds " +
                  std::to_string(cache.length(view.layer, h)));
  merge_layer(view.layer, snap, keep, cache);
  return keep;
}

void ValueMergeWrapper::finish(Session& session, const Budget& budget) {
  KvCache& cache = session.cache();
  const Model& model = session.model();
  const auto& cfg = model.config();
  const LayerStats none;
  std::vector<LayerSnapshot> snaps(static_cast<size_t>(cfg.n_layer));
  for (int64_t l = 0; l < cfg.n_layer; ++l)
    if (!cfg.layer_sliding[static_cast<size_t>(l)] && cache.window(l) == 0) snaps[static_cast<size_t>(l)] = snapshot(LayerView(model, l, cache, none));
  inner_->finish(session, budget);
  next_position_ = inner_->next_position();
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    const auto& snap = snaps[static_cast<size_t>(l)];
    if (snap.empty()) continue;
    // Runs keep unique ascending positions: the slots kept are found by position.
    KeepSets keep(snap.size());
    for (size_t h = 0; h < snap.size(); ++h) {
      const auto& before = snap[h].positions;
      size_t i = 0;
      for (int32_t p : cache.positions(l, static_cast<int64_t>(h))) {
        while (i < before.size() && before[i] < p) ++i;
        if (i == before.size() || before[i] != p)
          throw Error("internal: press '" + name_ + "': after '" + inner_->name() + "' finished, layer " + std::to_string(l) + " head " +
                      std::to_string(h) + " holds position " + std::to_string(p) + ", which it did not hold before");
        keep[h].push_back(static_cast<int32_t>(i++));
      }
    }
    merge_layer(l, snap, keep, cache);
  }
}

}  // namespace kvsqueeze::merge
