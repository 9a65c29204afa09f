// KVCompose (arXiv 2509.05165, kvpress KVComposePress): the context is fed a second time on
// top of the cache; each context slot scores what its query heads paid it over those queries
// (agg_task: max or mean), aggregated over the G query heads of its KV head (agg_group),
// optionally times ||v||, plus the mean across the layer's heads. Per layer, the heads' score
// vectors sorted descending are aggregated rank by rank (agg_head) into a composite; the first
// layer's composite is the max over layers; a global top-k over all composites gives the
// slots each layer keeps (structured: the same count for every head of a layer), or over the
// heads' own sorted scores (unstructured: a count per head). Each head keeps its own best
// slots. The second pass is rolled back. kvpress masks in unstructured mode and keeps the
// duplicate context visible; here every head really shrinks to its count.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend/host_math.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/session.h"
#include "press/global_presses.h"
#include "press/pass_attention.h"
#include "press/press_registry.h"

namespace kvsqueeze {
namespace {

struct ComposeOptions {
  bool structured = true;
  std::string agg_task = "max", agg_group = "mean", agg_head = "mean";  // as given; read through the flags below
  bool task_max = true, group_max = false, head_max = false;
  bool v_norm = false, mean_across_heads = true;
  int64_t lower_bound = 0;
  bool parity = false;
};

class KvComposePress : public ContextPassPress {
 public:
  explicit KvComposePress(ComposeOptions o) : o_(o) {}
  std::string name() const override { return "kvcompose"; }
  void finish(Session& session, const Budget& budget) override;

 private:
  ComposeOptions o_;
};

void KvComposePress::finish(Session& session, const Budget& budget) {
  const Model& model = session.model();
  const auto& cfg = model.config();
  KvCache& cache = session.cache();
  const int32_t ctx_end = context_end(session);
  const int64_t L = static_cast<int64_t>(ids_.size()), Hq = cfg.n_head, Hkv = cfg.n_head_kv, G = Hq / Hkv, dk = cfg.head_dim_k;
  // Layers that share the budget: the compressible ones (parity: every layer, as kvpress does on Gemma 3).
  std::vector<int64_t> layers;
  for (int64_t l = 0; l < cfg.n_layer; ++l)
    if (o_.parity || cache.window(l) == 0) layers.push_back(l);
  if (layers.empty()) return;

  // Second pass: per layer and query head, the task aggregate of each context position.
  std::vector<std::vector<double>> agg(static_cast<size_t>(cfg.n_layer));
  for (int64_t l : layers) agg[static_cast<size_t>(l)].assign(static_cast<size_t>(Hq * L), o_.task_max ? -INFINITY : 0.0);
  int64_t n_queries = 0;
  cache.protect_query_position(ctx_end);
  const PassGuard guard{session};
  session.set_stats_request({.pre_rope_query_rows = std::max<int64_t>(session.options().chunk, L)});
  session.set_layer_hook([&](const LayerStats& st, KvCache& kv) {
    const int64_t l = st.layer;
    auto& a = agg[static_cast<size_t>(l)];
    const int64_t n = static_cast<int64_t>(st.positions.size());
    if (l == 0) n_queries += n;
    if (a.empty()) return;
    if (st.pre_rope_rows != n) throw Error("internal: kvcompose needs every query of the second pass");
    const LayerView view(model, l, kv, st);
    const auto freq = view.inv_freq();
    const int64_t half = dk / 2;
    std::vector<float> q(st.pre_rope_queries), cs(static_cast<size_t>(n * half)), sn(cs.size());
    host::rope_tables(st.positions.data(), n, freq.data(), dk, cs.data(), sn.data());
    const auto style = host::rope_style(cfg.rope_neox);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t hq = 0; hq < Hq; ++hq) host::rope_apply(q.data() + (t * Hq + hq) * dk, dk, cs.data() + t * half, sn.data() + t * half, style);
    for (int64_t h = 0; h < Hkv; ++h) {
      const auto pos = view.positions(h);
      const std::vector<float> keys = view.keys(h);
      // The context's slots: positions [first_pos_, first_pos_ + L) (ascending, a range of the run).
      const int64_t lo = std::lower_bound(pos.begin(), pos.end(), first_pos_) - pos.begin();
      const int64_t hi = std::lower_bound(pos.begin(), pos.end(), first_pos_ + static_cast<int32_t>(L)) - pos.begin();
      std::vector<double> part(static_cast<size_t>(G * (hi - lo)), 0.0);
      pass_attention({.q = q.data() + h * G * dk, .q_pos = st.positions.data(), .n = n, .q_stride = Hq * dk, .G = G,
                      .head_dim = dk, .keys = keys.data(), .slot_pos = pos.data(), .m = view.length(h),
                      .scale = cfg.attn_scale, .window = static_cast<int32_t>(kv.window(l)), .lo = lo, .hi = hi, .take_max = o_.task_max},
                     part);
      for (int64_t g = 0; g < G; ++g)
        for (int64_t j = lo; j < hi; ++j) {
          double& dst = a[static_cast<size_t>((h * G + g) * L + pos[static_cast<size_t>(j)] - first_pos_)];
          const double p = part[static_cast<size_t>(g * (hi - lo) + j - lo)];
          dst = o_.task_max ? std::max(dst, p) : dst + p;
        }
    }
  });
  session.eval(ids_);
  session.set_layer_hook(nullptr);
  session.set_stats_request({});
  session.rollback_to(ctx_end);

  // Scores per KV head (group aggregate, value norms, mean across heads).
  trace_ = {};
  trace_.scores.resize(static_cast<size_t>(cfg.n_layer));
  trace_.composite.resize(static_cast<size_t>(cfg.n_layer));
  for (int64_t l : layers) {
    auto& a = agg[static_cast<size_t>(l)];
    auto& s = trace_.scores[static_cast<size_t>(l)];
    s.assign(static_cast<size_t>(Hkv), std::vector<float>(static_cast<size_t>(L), 0.0f));
    for (int64_t h = 0; h < Hkv; ++h) {
      const auto pos = cache.positions(l, h);
      std::vector<float> vn;
      if (o_.v_norm) vn = value_norms(cache, l, h);
      for (int64_t c = 0; c < L; ++c) {
        double v = o_.group_max ? -INFINITY : 0.0;
        for (int64_t g = 0; g < G; ++g) {
          double x = a[static_cast<size_t>((h * G + g) * L + c)];
          if (!o_.task_max) x /= static_cast<double>(n_queries);
          if (o_.task_max && std::isinf(x)) x = 0.0;  // never seen (a trimmed sliding-window slot)
          v = o_.group_max ? std::max(v, x) : v + x / static_cast<double>(G);
        }
        s[static_cast<size_t>(h)][static_cast<size_t>(c)] = static_cast<float>(v);
      }
      if (o_.v_norm)
        for (size_t j = 0; j < pos.size(); ++j) {
          const int64_t c = pos[j] - first_pos_;
          if (c >= 0 && c < L) s[static_cast<size_t>(h)][static_cast<size_t>(c)] *= vn[j];
        }
    }
    if (o_.mean_across_heads)
      for (int64_t c = 0; c < L; ++c) {
        float m = 0;
        for (int64_t h = 0; h < Hkv; ++h) m += s[static_cast<size_t>(h)][static_cast<size_t>(c)];
        m /= static_cast<float>(Hkv);
        for (int64_t h = 0; h < Hkv; ++h) s[static_cast<size_t>(h)][static_cast<size_t>(c)] += m;
      }
  }

  // Composites and counts.
  std::vector<std::vector<float>> sorted_head(static_cast<size_t>(cfg.n_layer * Hkv));
  for (int64_t l : layers) {
    auto& comp = trace_.composite[static_cast<size_t>(l)];
    comp.assign(static_cast<size_t>(L), o_.head_max ? -INFINITY : 0.0f);
    for (int64_t h = 0; h < Hkv; ++h) {
      auto v = trace_.scores[static_cast<size_t>(l)][static_cast<size_t>(h)];
      std::sort(v.begin(), v.end(), std::greater<float>());
      for (int64_t c = 0; c < L; ++c) {
        float& d = comp[static_cast<size_t>(c)];
        d = o_.head_max ? std::max(d, v[static_cast<size_t>(c)]) : d + v[static_cast<size_t>(c)] / static_cast<float>(Hkv);
      }
      for (int64_t c = 0; c < std::min(L, o_.lower_bound); ++c) v[static_cast<size_t>(c)] += 1e9f;
      sorted_head[static_cast<size_t>(l * Hkv + h)] = std::move(v);
    }
    for (int64_t c = 0; c < std::min(L, o_.lower_bound); ++c) comp[static_cast<size_t>(c)] += 1e9f;
  }
  auto& first = trace_.composite[static_cast<size_t>(layers.front())];
  for (int64_t l : layers)
    for (int64_t c = 0; c < L; ++c) first[static_cast<size_t>(c)] = std::max(first[static_cast<size_t>(c)], trace_.composite[static_cast<size_t>(l)][static_cast<size_t>(c)]);
  // Global top-k over a set of sorted vectors: how many of each vector's entries are in it.
  auto counts_of = [&](const std::vector<const std::vector<float>*>& vecs, int64_t per_vector_budget) {
    const int64_t total = static_cast<int64_t>(vecs.size()) * L;
    int64_t n_kept = budget.tokens >= 0 ? std::min(total, per_vector_budget * static_cast<int64_t>(vecs.size()))
                                        : static_cast<int64_t>(std::trunc(static_cast<double>(total) * (1.0 - budget.ratio)));
    struct E {
      float s;
      int32_t v, c;
    };
    std::vector<E> all;
    all.reserve(static_cast<size_t>(total));
    for (size_t i = 0; i < vecs.size(); ++i)
      for (int64_t c = 0; c < L; ++c) all.push_back({(*vecs[i])[static_cast<size_t>(c)], static_cast<int32_t>(i), static_cast<int32_t>(c)});
    n_kept = std::clamp<int64_t>(n_kept, 0, total);
    std::nth_element(all.begin(), all.begin() + n_kept, all.end(), [](const E& a, const E& b) {
      return a.s > b.s || (a.s == b.s && (a.c < b.c || (a.c == b.c && a.v < b.v)));
    });
    std::vector<int64_t> counts(vecs.size(), 0);
    for (int64_t i = 0; i < n_kept; ++i) ++counts[static_cast<size_t>(all[static_cast<size_t>(i)].v)];
    return counts;
  };
  const int64_t per_head_budget = budget.tokens;
  {
    std::vector<const std::vector<float>*> vecs;
    for (int64_t l : layers) vecs.push_back(&trace_.composite[static_cast<size_t>(l)]);
    const auto c = counts_of(vecs, per_head_budget);
    trace_.kept_per_layer.assign(static_cast<size_t>(cfg.n_layer), L);
    for (size_t i = 0; i < layers.size(); ++i) trace_.kept_per_layer[static_cast<size_t>(layers[i])] = c[i];
  }
  {
    std::vector<const std::vector<float>*> vecs;
    for (int64_t l : layers)
      for (int64_t h = 0; h < Hkv; ++h) vecs.push_back(&sorted_head[static_cast<size_t>(l * Hkv + h)]);
    const auto c = counts_of(vecs, per_head_budget);
    trace_.kept_per_head.assign(static_cast<size_t>(cfg.n_layer), std::vector<int64_t>(static_cast<size_t>(Hkv), L));
    for (size_t i = 0; i < layers.size(); ++i)
      for (int64_t h = 0; h < Hkv; ++h) trace_.kept_per_head[static_cast<size_t>(layers[i])][static_cast<size_t>(h)] = c[i * static_cast<size_t>(Hkv) + static_cast<size_t>(h)];
  }

  // Each head keeps its own best context slots (slots outside the context are kept).
  for (int64_t l : layers) {
    if (cache.window(l) > 0) continue;  // parity mode scored it; sliding layers are never compressed
    KeepSets keep(static_cast<size_t>(Hkv));
    for (int64_t h = 0; h < Hkv; ++h) {
      const int64_t count = o_.structured ? trace_.kept_per_layer[static_cast<size_t>(l)] : trace_.kept_per_head[static_cast<size_t>(l)][static_cast<size_t>(h)];
      const auto pos = cache.positions(l, h);
      const auto& s = trace_.scores[static_cast<size_t>(l)][static_cast<size_t>(h)];
      LayerScores one(1);
      for (int32_t p : pos) {
        const int64_t c = p - first_pos_;
        one[0].push_back(c >= 0 && c < L ? s[static_cast<size_t>(c)] : INFINITY);
      }
      const int64_t outside = std::count(one[0].begin(), one[0].end(), INFINITY);
      keep[static_cast<size_t>(h)] = top_k_per_head(one, {count + outside})[0];
    }
    compact_layer(cache, l, keep);
  }
  forget_context();
}

}  // namespace

void register_kvcompose_press() {
  using O = ComposeOptions;
  register_press<O>({"kvcompose", "KVCompose: attention of a second pass over the context; composite per-layer budgets from a global top-k.", {}, 0,
                     "The second pass is rolled back (kvpress truncates, or in unstructured mode keeps the duplicate context "
                     "visible). Unstructured mode really shrinks each head to its own count (kvpress masks). Outside parity "
                     "mode only compressible layers share the budget."},
                    {field("structured", &O::structured, "same count for every head of a layer (false: a count per head)"),
                     field("agg_task", &O::agg_task, {"max", "mean"}, "how the second pass's queries aggregate each slot's attention"),
                     field("agg_group", &O::agg_group, {"mean", "max"}, "aggregation over the G query heads of a KV head"),
                     field("agg_head", &O::agg_head, {"mean", "max"}, "aggregation of the heads' sorted scores into the layer composite"),
                     field("add_v_norm", &O::v_norm, "multiply each slot's score by ||v||"),
                     field("add_mean_across_heads", &O::mean_across_heads, "add the mean over the layer's heads to each head's scores"),
                     field("keep_token_lower_bound", &O::lower_bound, 0, 1e9, "slots every layer (head) keeps at least"),
                     field("parity", &O::parity,
                           "share the budget with sliding-window layers too, as kvpress does on Gemma 3 (they are still not compressed)")},
                    [](O o) {
                      o.task_max = o.agg_task == "max";
                      o.group_max = o.agg_group == "max";
                      o.head_max = o.agg_head == "max";
                      return std::make_unique<KvComposePress>(o);
                    });
}

}  // namespace kvsqueeze
