#include "press/wrapper_util.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <numeric>

#include "backend/host_math.h"
#include "kvsqueeze/error.h"
#include "model/model_weights.h"

namespace kvsqueeze::wrapper {
namespace {

// Token-indexed rows of `s` whose positions lie in [lo, hi].
void slice_tokens(const LayerStats& s, int32_t lo, int32_t hi, int64_t query_row, int64_t n_embd, LayerStats& out) {
  out.layer = s.layer;
  out.last_chunk = s.last_chunk;
  const auto n = static_cast<int64_t>(s.positions.size());
  const int64_t first_q = n - s.pre_rope_rows;  // pre-RoPE rows are the chunk's last ones
  const bool hidden = !s.hidden_states.empty();
  for (int64_t t = 0; t < n; ++t) {
    const int32_t p = s.positions[static_cast<size_t>(t)];
    if (p < lo || p > hi) continue;
    out.positions.push_back(p);
    if (hidden)
      out.hidden_states.insert(out.hidden_states.end(), s.hidden_states.begin() + t * n_embd, s.hidden_states.begin() + (t + 1) * n_embd);
    if (t >= first_q) {
      const int64_t r = t - first_q;
      out.pre_rope_queries.insert(out.pre_rope_queries.end(), s.pre_rope_queries.begin() + r * query_row,
                                  s.pre_rope_queries.begin() + (r + 1) * query_row);
      ++out.pre_rope_rows;
    }
  }
}

}  // namespace

bool needs_attention(const StatsRequest& r) { return r.window_queries > 0 || r.column_sums; }

void reject_attention(const Press& inner, const std::string& wrapper) {
  if (needs_attention(inner.needs()))
    throw Error("press '" + wrapper + "' cannot wrap '" + inner.name() +
                "': it scores slices of the cache, and attention statistics (window attention, column sums) "
                "cover the whole cache; wrap a press that scores from keys, values or hidden states");
}

SubView::SubView(const LayerView& full, const std::vector<int64_t>& begin, const std::vector<int64_t>& end, bool standalone) {
  view_ = std::make_unique<LayerView>(full, begin, end, stats_);
  const auto& c = full.config();
  if (view_->n_head_kv() > 0 && view_->length(0) > 0)
    slice_tokens(full.stats, view_->positions(0).front(), view_->positions(0).back(), c.n_head * c.head_dim_k, c.n_embd, stats_);
  else
    stats_.layer = full.stats.layer, stats_.last_chunk = full.stats.last_chunk;
  stats_.standalone = standalone;
}

GatheredView::GatheredView(const LayerView& full, const KeepSets& slots) {
  const int64_t dk = full.head_dim_k(), dv = full.head_dim_v();
  LayerView::OwnedRows rows;
  for (int64_t h = 0; h < full.n_head_kv(); ++h) {
    const auto& s = slots.at(static_cast<size_t>(h));
    const auto from = full.positions(h);
    auto& k = rows.keys.emplace_back(s.size() * static_cast<size_t>(dk));
    auto& v = rows.values.emplace_back(s.size() * static_cast<size_t>(dv));
    auto& p = rows.positions.emplace_back(s.size());
    for (size_t j = 0; j < s.size(); ++j) {
      full.key_row(h, s[j], k.data() + j * static_cast<size_t>(dk));
      full.value_row(h, s[j], v.data() + j * static_cast<size_t>(dv));
      p[j] = from[static_cast<size_t>(s[j])];
    }
  }
  stats_ = full.stats;
  stats_.attention = {};
  view_ = std::make_unique<LayerView>(full.model, full.layer, std::move(rows), stats_);
}

LayerStats gather_stats(const LayerStats& stats, const KeepSets& keep, int64_t group) {
  LayerStats out = stats;
  auto& a = out.attention;
  const int64_t rows = a.window_rows;
  for (size_t q = 0; q < a.window.size() && rows > 0; ++q) {
    const auto& k = keep.at(q / static_cast<size_t>(group));
    const auto& src = stats.attention.window[q];
    const auto len = static_cast<int64_t>(src.size()) / rows;
    std::vector<float> dst(static_cast<size_t>(rows) * k.size());
    for (int64_t r = 0; r < rows; ++r)
      for (size_t j = 0; j < k.size(); ++j) dst[static_cast<size_t>(r) * k.size() + j] = src[static_cast<size_t>(r * len + k[j])];
    a.window[q] = std::move(dst);
  }
  for (size_t q = 0; q < a.column_sums.size(); ++q) {
    const auto& k = keep.at(q / static_cast<size_t>(group));
    std::vector<float> dst(k.size());
    for (size_t j = 0; j < k.size(); ++j) dst[j] = stats.attention.column_sums[q][static_cast<size_t>(k[j])];
    a.column_sums[q] = std::move(dst);
  }
  return out;
}

KeepSets chain(const KeepSets& keep_a, const KeepSets& keep_b) {
  KeepSets out(keep_b.size());
  for (size_t h = 0; h < keep_b.size(); ++h)
    for (int32_t i : keep_b[h]) out[h].push_back(keep_a.at(h).at(static_cast<size_t>(i)));
  return out;
}

double keep_fraction(const Budget& budget, int64_t len) {
  if (budget.tokens >= 0) return len > 0 ? std::min(1.0, static_cast<double>(budget.tokens) / static_cast<double>(len)) : 1.0;
  return 1.0 - budget.ratio;
}

void safeguard(LayerScores& scores, const std::vector<int64_t>& counts) {
  const KeepSets top = top_k_per_head(scores, counts);
  for (size_t h = 0; h < scores.size(); ++h)
    for (int32_t i : top[h]) {
      float& s = scores[h][static_cast<size_t>(i)];
      if (!(s == INFINITY)) s = FLT_MAX;
    }
}

KeepSets pooled_top_k(const LayerScores& scores, int64_t total) {
  struct Slot {
    float s;
    int32_t head, i;
  };
  std::vector<Slot> all;
  for (size_t h = 0; h < scores.size(); ++h)
    for (size_t i = 0; i < scores[h].size(); ++i) {
      const float x = scores[h][i];
      all.push_back({std::isnan(x) ? -INFINITY : x, static_cast<int32_t>(h), static_cast<int32_t>(i)});
    }
  const auto better = [](const Slot& a, const Slot& b) {
    if (a.s != b.s) return a.s > b.s;
    if (a.i != b.i) return a.i > b.i;
    return a.head > b.head;
  };
  const int64_t protected_slots = std::count_if(all.begin(), all.end(), [](const Slot& x) { return x.s == INFINITY; });
  const auto keep = static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(all.size()), std::max(total, protected_slots)));
  if (keep < all.size()) std::nth_element(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(keep), all.end(), better);
  KeepSets out(scores.size());
  for (size_t j = 0; j < keep; ++j) out[static_cast<size_t>(all[j].head)].push_back(all[j].i);
  for (auto& k : out) std::sort(k.begin(), k.end());
  return out;
}

std::vector<float> output_projection(const LayerView& view) {
  const auto& wo = view.model.weights().layers.at(static_cast<size_t>(view.layer)).wo;
  std::vector<float> out(static_cast<size_t>(wo.rows * wo.cols));
  for (int64_t r = 0; r < wo.rows; ++r) host::get_row(wo, r, out.data() + r * wo.cols);
  return out;
}

std::vector<std::vector<float>> projected_value_norms(const LayerView& view, const std::vector<float>& wo) {
  const auto& c = view.config();
  const int64_t dv = view.head_dim_v(), group = view.group(), cols = c.n_head * dv;
  const auto rows = static_cast<int64_t>(wo.size()) / cols;
  if (rows * cols != static_cast<int64_t>(wo.size())) throw Error("internal: W_o of layer " + std::to_string(view.layer) + " has an unexpected shape");
  std::vector<std::vector<float>> out(static_cast<size_t>(view.n_head_kv()));
  for (int64_t h = 0; h < view.n_head_kv(); ++h) {
    const std::vector<float> v = view.values(h);
    const int64_t len = view.length(h);
    std::vector<double> acc(static_cast<size_t>(len), 0.0);
    for (int64_t g = 0; g < group; ++g) {
      const int64_t q = h * group + g;
      for (int64_t r = 0; r < rows; ++r) {
        const float* w = wo.data() + r * cols + q * dv;
        for (int64_t i = 0; i < len; ++i) {
          const float* x = v.data() + i * dv;
          float dot = 0;
          for (int64_t j = 0; j < dv; ++j) dot += x[j] * w[j];
          acc[static_cast<size_t>(i)] += std::fabs(dot);
        }
      }
    }
    auto& o = out[static_cast<size_t>(h)];
    o.resize(static_cast<size_t>(len));
    for (int64_t i = 0; i < len; ++i) o[static_cast<size_t>(i)] = static_cast<float>(acc[static_cast<size_t>(i)] / static_cast<double>(group));
  }
  return out;
}

KeepSets adakv_allocation(const LayerView& view, const Budget& budget, double alpha, LayerScores& scores) {
  std::vector<int64_t> safe;
  int64_t total = 0;
  for (int64_t h = 0; h < view.n_head_kv(); ++h) {
    const int64_t n = budget.keep(view.length(h));
    total += n;
    safe.push_back(static_cast<int64_t>(static_cast<double>(n) * alpha));
  }
  safeguard(scores, safe);
  return pooled_top_k(scores, total);
}

}  // namespace kvsqueeze::wrapper
