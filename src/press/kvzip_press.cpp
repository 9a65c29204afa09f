// KVzip (arXiv 2505.23416, kvpress KVzipPress): context reconstruction. After the context was
// evaluated, the model is fed, on top of the cache, a prompt asking it to repeat the context
// followed by the context itself (in chunks of chunk_size tokens; later chunks ask to continue
// from the previous chunk's last 8 tokens). A context slot scores the largest attention any
// repeat query of any query head of its group pays it, the softmax taken over [the first
// n_sink context slots, the chunk's own slots, the repeat tokens seen so far]. The repeat
// tokens are then rolled back and the lowest scores over all (compressible) layers and heads
// are evicted: per-head lengths differ and the cache really shrinks (kvpress only masks).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <tuple>

#include "backend/host_math.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/session.h"
#include "model/model_weights.h"
#include "press/global_presses.h"
#include "press/pass_attention.h"
#include "press/press_registry.h"

namespace kvsqueeze {
namespace {

constexpr const char* kFirstPrompt = "\n\nRepeat the previous context exactly.";
constexpr const char* kNextPrompt = "\n\nRepeat the part of the previous context exactly, starting with";
constexpr int64_t kPrevPostfix = 8;

struct KvzipOptions {
  bool layerwise = false;
  int64_t n_sink = 4;
  bool plus = false;
  int64_t chunk_size = 2048;
  bool parity = false;
};

class KvzipPress : public ContextPassPress {
 public:
  explicit KvzipPress(KvzipOptions o) : o_(o) {}
  std::string name() const override { return "kvzip"; }
  void finish(Session& session, const Budget& budget) override;

 private:
  // Prefix (before the context) and suffix (after it, up to the answer) of the chat template.
  void template_parts(const Model& model, std::vector<int32_t>& prefix, std::vector<int32_t>& suffix) const;
  void score_pass(Session& session, const std::vector<int32_t>& repeat, int32_t start, int32_t end);
  void allocate(Session& session, const Budget& budget);

  KvzipOptions o_;
};

void KvzipPress::template_parts(const Model& model, std::vector<int32_t>& prefix, std::vector<int32_t>& suffix) const {
  const auto& tmpl = model.chat_template();
  const auto& tok = model.tokenizer();
  std::string prefix_text, suffix_text = "\n";  // kvpress: no chat template
  if (tmpl.name() != "none") {
    const std::string dummy = "dummy context";
    std::string sep = "\n";  // (built by append: GCC 12 misreports operator+ here under -Wrestrict)
    sep.append(dummy.size(), '#');
    const std::string rendered = tmpl.apply({{"user", dummy + sep}}, true);
    const size_t at = rendered.find(sep);
    if (at == std::string::npos) throw Error("kvzip: cannot locate the context in the chat template");
    suffix_text = rendered.substr(at + sep.size());
    prefix_text = rendered.substr(0, rendered.find(dummy));
  }
  prefix = prefix_text.empty() ? std::vector<int32_t>{} : tok.encode(prefix_text, false, true);
  suffix = tok.encode(suffix_text, false, true);
}

void KvzipPress::finish(Session& session, const Budget& budget) {
  const Model& model = session.model();
  const auto& cfg = model.config();
  KvCache& cache = session.cache();
  const int32_t ctx_end = context_end(session);

  std::vector<int32_t> prefix, suffix;
  template_parts(model, prefix, suffix);
  // The prefix is only skipped when the context really starts with it.
  int64_t prefix_len = static_cast<int64_t>(prefix.size());
  if (prefix_len > static_cast<int64_t>(ids_.size()) || !std::equal(prefix.begin(), prefix.end(), ids_.begin())) prefix_len = 0;
  trace_ = {};
  trace_.prefix_length = prefix_len;
  trace_.scores.resize(static_cast<size_t>(cfg.n_layer));
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    if (cache.window(l) > 0) continue;
    auto& s = trace_.scores[static_cast<size_t>(l)];
    s.resize(static_cast<size_t>(cfg.n_head_kv));
    for (int64_t h = 0; h < cfg.n_head_kv; ++h) s[static_cast<size_t>(h)].assign(static_cast<size_t>(cache.length(l, h)), 0.0f);
  }

  // Repeat passes on top of the cache, each rolled back; sliding-window layers must keep what
  // a query at the context end sees so that the rollback is possible.
  cache.protect_query_position(ctx_end);
  const PassGuard guard{session};
  const auto& tok = model.tokenizer();
  const std::vector<int32_t> first_q = tok.encode(kFirstPrompt, false, true), next_q = tok.encode(kNextPrompt, false, true);
  const int64_t body = static_cast<int64_t>(ids_.size()) - prefix_len;
  for (int64_t c0 = 0, i = 0; c0 < body; c0 += o_.chunk_size, ++i) {
    const int64_t c1 = std::min(body, c0 + o_.chunk_size);
    const auto chunk_begin = ids_.begin() + prefix_len + c0, chunk_end = ids_.begin() + prefix_len + c1;
    std::vector<int32_t> repeat = i == 0 ? first_q : next_q;
    if (i > 0) repeat.insert(repeat.end(), std::max(ids_.begin() + prefix_len, chunk_begin - kPrevPostfix), chunk_begin);
    repeat.insert(repeat.end(), suffix.begin(), suffix.end());
    repeat.insert(repeat.end(), chunk_begin, chunk_end);
    trace_.repeat_ids.push_back(repeat);
    score_pass(session, repeat, first_pos_ + static_cast<int32_t>(prefix_len + c0), first_pos_ + static_cast<int32_t>(prefix_len + c1));
    session.rollback_to(ctx_end);
  }
  session.set_layer_hook(nullptr);
  session.set_stats_request({});
  allocate(session, budget);
  forget_context();
}

// One repeat pass: every query of `repeat` (at positions from the context end on) scores the
// slots at positions [start, end) of each compressible layer.
void KvzipPress::score_pass(Session& session, const std::vector<int32_t>& repeat, int32_t start, int32_t end) {
  const Model& model = session.model();
  const auto& cfg = model.config();
  const int64_t Hq = cfg.n_head, Hkv = cfg.n_head_kv, G = Hq / Hkv, dk = cfg.head_dim_k, dv = cfg.head_dim_v, D = cfg.n_embd;
  const int32_t rep0 = session.next_position();
  const int32_t sink_end = first_pos_ + static_cast<int32_t>(std::min<int64_t>(o_.n_sink, start - first_pos_));
  session.set_stats_request(
      {.pre_rope_query_rows = std::max<int64_t>(session.options().chunk, static_cast<int64_t>(repeat.size())), .hidden_states = o_.plus});
  session.set_layer_hook([&](const LayerStats& st, KvCache& cache) {
    const int64_t l = st.layer;
    if (cache.window(l) > 0) return;
    const int64_t n = static_cast<int64_t>(st.positions.size());
    if (st.pre_rope_rows != n) throw Error("internal: kvzip needs every repeat query");
    // RoPE on the queries, as the forward pass applies it.
    const LayerView view(model, l, cache, st);
    const auto freq = view.inv_freq();
    const int64_t half = dk / 2;
    std::vector<float> q(st.pre_rope_queries), cs(static_cast<size_t>(n * half)), sn(cs.size());
    host::rope_tables(st.positions.data(), n, freq.data(), dk, cs.data(), sn.data());
    const auto style = host::rope_style(cfg.rope_neox);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t hq = 0; hq < Hq; ++hq) host::rope_apply(q.data() + (t * Hq + hq) * dk, dk, cs.data() + t * half, sn.data() + t * half, style);
    std::vector<float> inv_hnorm(static_cast<size_t>(n), 1.0f);
    if (o_.plus)
      for (int64_t t = 0; t < n; ++t) {
        double ss = 0;
        for (int64_t i = 0; i < D; ++i) ss += static_cast<double>(st.hidden_states[static_cast<size_t>(t * D + i)]) * st.hidden_states[static_cast<size_t>(t * D + i)];
        inv_hnorm[static_cast<size_t>(t)] = static_cast<float>(1.0 / std::sqrt(ss));
      }
    const auto& wo = model.weights().layers[static_cast<size_t>(l)].wo;
    auto& layer_scores = trace_.scores[static_cast<size_t>(l)];
    for (int64_t h = 0; h < Hkv; ++h) {
      const auto pos = view.positions(h);
      auto lb = [&](int32_t p) { return static_cast<int64_t>(std::lower_bound(pos.begin(), pos.end(), p) - pos.begin()); };
      // The slots the softmax runs over: sinks, the chunk, the repeat tokens.
      std::vector<int64_t> slots;
      for (int64_t j = lb(first_pos_); j < lb(sink_end); ++j) slots.push_back(j);
      const int64_t chunk_at = static_cast<int64_t>(slots.size()), c_lo = lb(start), c_hi = lb(end);
      for (int64_t j = c_lo; j < c_hi; ++j) slots.push_back(j);
      const int64_t rep_at = static_cast<int64_t>(slots.size());
      for (int64_t j = lb(rep0); j < view.length(h); ++j) slots.push_back(j);
      const int64_t m = static_cast<int64_t>(slots.size());
      const int64_t width = rep_at - chunk_at;  // the scored slots: the chunk's
      // KVzip+: ||W_o[q] v_j|| per query head of the group and chunk slot (G x width).
      std::vector<float> wov;
      if (o_.plus) {
        wov.assign(static_cast<size_t>(G * width), 0.0f);
        std::vector<float> rows(static_cast<size_t>(width * Hq * dv), 0.0f), out(static_cast<size_t>(width * D));
        for (int64_t g = 0; g < G; ++g) {
          const int64_t hq = h * G + g;
          std::fill(rows.begin(), rows.end(), 0.0f);
          for (int64_t a = 0; a < width; ++a)
            view.value_row(h, slots[static_cast<size_t>(chunk_at + a)], rows.data() + (a * Hq + hq) * dv);
          host::matmul(wo, rows.data(), width, out.data());
          for (int64_t a = 0; a < width; ++a) {
            double ss = 0;
            for (int64_t i = 0; i < D; ++i) ss += static_cast<double>(out[static_cast<size_t>(a * D + i)]) * out[static_cast<size_t>(a * D + i)];
            wov[static_cast<size_t>(g * width + a)] = static_cast<float>(std::sqrt(ss));
          }
        }
      }
      // The slots' keys in a row, then every repeat query of every query head of the group.
      std::vector<float> keys(static_cast<size_t>(m * dk));
      std::vector<int32_t> slot_pos(static_cast<size_t>(m));
      for (int64_t a = 0; a < m; ++a) {
        const int64_t j = slots[static_cast<size_t>(a)];
        view.key_row(h, j, keys.data() + a * dk);
        slot_pos[static_cast<size_t>(a)] = pos[static_cast<size_t>(j)];
      }
      std::vector<double> agg(static_cast<size_t>(G * width), 0.0);
      pass_attention({.q = q.data() + h * G * dk, .q_pos = st.positions.data(), .n = n, .q_stride = Hq * dk, .G = G,
                      .head_dim = dk, .keys = keys.data(), .slot_pos = slot_pos.data(), .m = m, .scale = cfg.attn_scale,
                      .lo = chunk_at, .hi = rep_at, .take_max = true,
                      .row_factor = o_.plus ? inv_hnorm.data() : nullptr,
                      .slot_factor = o_.plus ? wov.data() : nullptr},
                     agg);
      auto& best = layer_scores[static_cast<size_t>(h)];
      for (int64_t g = 0; g < G; ++g)
        for (int64_t a = chunk_at; a < rep_at; ++a) {
          float& b = best[static_cast<size_t>(slots[static_cast<size_t>(a)])];
          b = std::max(b, static_cast<float>(agg[static_cast<size_t>(g * width + a - chunk_at)]));
        }
    }
  });
  session.eval(repeat);
}

// Global (or per-layer) bottom-k over the scores; the sinks (and outside parity mode the chat
// prefix) are protected and count inside the budget.
void KvzipPress::allocate(Session& session, const Budget& budget) {
  const auto& cfg = session.model().config();
  KvCache& cache = session.cache();
  const int32_t protect_end = first_pos_ + static_cast<int32_t>(std::max<int64_t>(o_.n_sink, o_.parity ? 0 : trace_.prefix_length));
  struct Cand {
    float s;
    int32_t pos;
    int32_t layer, head, slot;
  };
  std::vector<std::vector<Cand>> groups;  // one group per allocation unit (all layers, or each layer)
  std::vector<int64_t> totals;
  int64_t n_compressible = 0;
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    const auto& ls = trace_.scores[static_cast<size_t>(l)];
    if (ls.empty()) continue;
    ++n_compressible;
    if (o_.layerwise || groups.empty()) groups.emplace_back(), totals.push_back(0);
    for (int64_t h = 0; h < cfg.n_head_kv; ++h) {
      const auto pos = cache.positions(l, h);
      totals.back() += static_cast<int64_t>(pos.size());
      for (size_t j = 0; j < pos.size(); ++j) {
        if (pos[j] < protect_end || pos[j] >= first_pos_ + static_cast<int32_t>(ids_.size())) continue;  // protected
        groups.back().push_back({ls[static_cast<size_t>(h)][j], pos[j], static_cast<int32_t>(l), static_cast<int32_t>(h), static_cast<int32_t>(j)});
      }
    }
  }
  std::vector<std::vector<std::vector<char>>> evicted(static_cast<size_t>(cfg.n_layer));
  for (int64_t l = 0; l < cfg.n_layer; ++l)
    if (!trace_.scores[static_cast<size_t>(l)].empty()) {
      evicted[static_cast<size_t>(l)].resize(static_cast<size_t>(cfg.n_head_kv));
      for (int64_t h = 0; h < cfg.n_head_kv; ++h) evicted[static_cast<size_t>(l)][static_cast<size_t>(h)].assign(static_cast<size_t>(cache.length(l, h)), 0);
    }
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    auto& g = groups[gi];
    const int64_t units = o_.layerwise ? 1 : n_compressible;
    int64_t n_evict;
    if (budget.tokens >= 0) n_evict = std::max<int64_t>(0, totals[gi] - budget.tokens * cfg.n_head_kv * units);
    else n_evict = static_cast<int64_t>(std::trunc(static_cast<double>(totals[gi]) * budget.ratio));
    n_evict = std::min<int64_t>(n_evict, static_cast<int64_t>(g.size()));
    // Lowest first; NaN lowest; equal scores: the earlier position goes first.
    auto key = [](const Cand& c) { return std::isnan(c.s) ? -INFINITY : c.s; };
    std::nth_element(g.begin(), g.begin() + n_evict, g.end(), [&](const Cand& a, const Cand& b) {
      const float ka = key(a), kb = key(b);
      return std::tie(ka, a.pos, a.layer, a.head) < std::tie(kb, b.pos, b.layer, b.head);
    });
    for (int64_t i = 0; i < n_evict; ++i) evicted[static_cast<size_t>(g[static_cast<size_t>(i)].layer)][static_cast<size_t>(g[static_cast<size_t>(i)].head)][static_cast<size_t>(g[static_cast<size_t>(i)].slot)] = 1;
  }
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    if (trace_.scores[static_cast<size_t>(l)].empty()) continue;
    KeepSets keep(static_cast<size_t>(cfg.n_head_kv));
    for (int64_t h = 0; h < cfg.n_head_kv; ++h) {
      const auto& e = evicted[static_cast<size_t>(l)][static_cast<size_t>(h)];
      for (size_t j = 0; j < e.size(); ++j)
        if (!e[j]) keep[static_cast<size_t>(h)].push_back(static_cast<int32_t>(j));
    }
    compact_layer(cache, l, keep);
  }
}

}  // namespace

void register_kvzip_press() {
  using O = KvzipOptions;
  register_press<O>({"kvzip",
                     "Context reconstruction (KVzip): the attention that repeating the context pays each slot; global eviction across layers.",
                     {},
                     0,
                     "Really evicts (per-head lengths differ) where kvpress only masks. Runs on Gemma 3 too (kvpress refuses it); "
                     "sliding-window layers are neither scored nor compressed and the global budget is shared by the other layers. "
                     "Outside parity mode the chat-template prefix after the sinks is protected. Costs 2-3x the prefill."},
                    {field("layerwise", &O::layerwise, "evict the same number of slots in every layer (pooled over its heads) instead of globally"),
                     field("n_sink", &O::n_sink, 0, 1e6, "first context slots always kept"),
                     field("kvzip_plus_normalization", &O::plus, "KVzip+: divide each query's row by ||x_query||, multiply each slot by ||W_o[q] v||"),
                     field("chunk_size", &O::chunk_size, 1, 1e7, "context tokens repeated per pass"),
                     field("parity", &O::parity, "do not protect the chat-template prefix (kvpress evicts it first)")},
                    [](const O& o) { return std::make_unique<KvzipPress>(o); });
}

}  // namespace kvsqueeze
