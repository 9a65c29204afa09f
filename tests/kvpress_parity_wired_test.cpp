// Parity with kvpress 0.5.5 of the wrapper fixtures whose inner press landed after the wrappers
// (expected_attention, think), on stories260K and on the default model's global layers:
// adakv(expected_attention), critical / critical_adakv(expected_attention(use_vnorm=false)),
// chunk(expected_attention), composed(snapkv, think); and Finch with key re-rotation.
#include <cfloat>
#include <map>

#include "cli_runner.h"
#include "kernels/ops.h"
#include "kvpress_parity_adakv.h"
#include "model/model_weights.h"
#include "press/wrapper_util.h"

namespace kvsqueeze {
std::vector<std::vector<float>> think_channel_scores(Press& press, const LayerView& view);
}

namespace {

using parity::json;
using parity::num;
using namespace kvsqueeze;

parity::Tolerance gemma_tol() { return parity::gemma_tolerance(); }

using Exact = parity::ExactActivations;

bool marked(const json& x) { return num(x) >= 0.99 * FLT_MAX; }  // kvpress's finfo.max force-keep

// ---------------------------------------------------------------------------------------------
// AdaKV (kvpress_parity_adakv.h): ties at a head's safeguard edge allowed too, and our tied slots
// left out of the Jaccard index (ExpectedAttention underflows to exact zeros on stories layer 1).
void check_adakv(const std::string& model_name, const std::string& fixture, const std::string& expression, const parity::Tolerance& tol) {
  parity::Report rep;
  parity::check_adakv(model_name, fixture, expression, tol, {.safeguard_ties = true, .our_ties_unjudged = true}, &rep);
  if (rep.done)
    std::printf("[ wired    ] %s/%s max relative score deviation %.3g, min raw Jaccard %.3f\n", model_name.c_str(), fixture.c_str(),
                rep.max_rel_dev, rep.min_jaccard);
}

// ---------------------------------------------------------------------------------------------
// CriticalKV: the inner scores (press.press) and the combined ones (press). kvpress's combined
// call already holds the first stage's finfo.max marks; our score() is the second stage alone, so
// the comparison runs on the unmarked slots, and every marked slot must be kept.
void check_critical(const std::string& model_name, const parity::Tolerance& tol) {
  const std::string fixture = "criticalkv_expected_attention";
  PARITY_OPEN_OR_SKIP(l, model_name, fixture)
  Exact exact;
  double dev_inner = 0, dev = 0, min_j = 1;
  int tied_heads = 0;
  for (size_t r = 0; r < l->f.j["runs"].size(); ++r) {
    const double ratio = l->f.run(r)["ratio"].get<double>();
    auto press = make_press("critical(expected_attention(use_vnorm=false))");
    std::map<int64_t, LayerScores> inner;
    const auto ours = parity::run_ours(*l->model, l->f.ids, *press, Budget{ratio}, [&](Press& p, const LayerView& v) {
      inner[v.layer] = p.inner_presses().at(0)->score(v);
      return p.score(v);
    });
    for (int64_t layer : l->f.compressed_layers(l->model->config())) {
      const auto li = static_cast<size_t>(layer);
      const std::string where = parity::layer_name(model_name, fixture, ratio, layer);
      const json* ref_inner = parity::score_call(l->f, r, li, "press.press");
      const json* ref_comb = parity::score_call(l->f, r, li, "press");
      ASSERT_TRUE(ref_inner && ref_comb) << where;
      parity::expect_scores((*ref_inner)["scores"], inner[layer], tol, where + " (inner)");
      dev_inner = std::max(dev_inner, parity::max_rel_dev((*ref_inner)["scores"], inner[layer]));
      const json& ref = (*ref_comb)["scores"];
      const json& ref_in = (*ref_inner)["scores"];
      LayerScores ours_unmarked = ours.scores[li];
      const auto len = static_cast<int64_t>(ref[0].size());
      const auto n_first = static_cast<int64_t>((1.0 - ratio) * static_cast<double>(len) * 0.5);
      // Heads whose first stage is decided by a tie of the reference's inner scores (stories layer 1:
      // ExpectedAttention's softmax underflows to exact zeros) mark an arbitrary subset of the tied
      // slots upstream, which changes everything after: there only the untied marks and the count are
      // checked.
      json sub_layer, sub_ref = json::array();
      sub_layer["kept"] = json::array();
      std::vector<std::vector<int32_t>> sub_kept, sub_before;
      LayerScores sub_ours;
      for (size_t h = 0; h < ref.size(); ++h) {
        std::vector<double> in;
        for (const auto& x : ref_in[h]) in.push_back(num(x));
        std::vector<double> sorted = in;
        std::sort(sorted.begin(), sorted.end(), std::greater<>());
        const double t = sorted[static_cast<size_t>(n_first - 1)], next = sorted[static_cast<size_t>(n_first)];
        const bool tied = std::fabs(t - next) <= 1e-3 * std::fabs(t);  // well above our deviations (<= 2e-4)
        int64_t n_marked = 0;
        for (size_t i = 0; i < ref[h].size(); ++i)
          if (marked(ref[h][i])) {
            ++n_marked;
            ours_unmarked[h][i] = INFINITY;  // compared as protected: the reference's mark is above the rest
            if (!tied || in[i] > t * (1 + 1e-3)) {
              EXPECT_TRUE(std::binary_search(ours.kept[li][h].begin(), ours.kept[li][h].end(), static_cast<int32_t>(i)))
                  << where << " head " << h << ": first-stage slot " << i << " evicted";
            }
          }
        EXPECT_EQ(n_marked, n_first) << where << " head " << h;
        const auto& want = l->f.run(r)["layers"][li]["kept"][h];
        min_j = std::min(min_j, parity::raw_jaccard(want.get<std::vector<int32_t>>(), ours.kept[li][h]));
        if (tied) {
          ++tied_heads;
          EXPECT_EQ(ours.kept[li][h].size(), want.size()) << where << " head " << h;
          continue;
        }
        sub_layer["kept"].push_back(want);
        sub_ref.push_back(ref[h]);
        sub_kept.push_back(ours.kept[li][h]);
        sub_before.push_back(ours.positions_before[li][h]);
        sub_ours.push_back(ours_unmarked[h]);
      }
      parity::expect_scores(ref, ours_unmarked, tol, where + " (combined)");
      dev = std::max(dev, parity::max_rel_dev(ref, ours_unmarked));
      parity::expect_kept(sub_layer, &sub_ref, sub_kept, sub_ours, sub_before, tol, where);
    }
  }
  std::printf("[ wired    ] %s/%s max relative deviation inner %.3g, combined (unmarked) %.3g, min raw Jaccard %.3f, "
              "%d heads with a tied first stage\n", model_name.c_str(), fixture.c_str(), dev_inner, dev, min_j, tied_heads);
}

// ---------------------------------------------------------------------------------------------
// CriticalAdaKV (masked): inner scores against press.press; the kept sets against the fixture's,
// where a disagreement must sit at a cut of kvpress's selection re-enacted on the reference's
// inner scores (in double) and our projected value norms.
void check_critical_adakv(const std::string& model_name, const parity::Tolerance& tol) {
  const std::string fixture = "criticaladakv_expected_attention";
  PARITY_OPEN_OR_SKIP(l, model_name, fixture)
  Exact exact;
  double dev = 0, min_j = 1;
  int disagreements = 0;
  for (size_t r = 0; r < l->f.j["runs"].size(); ++r) {
    const json& run = l->f.run(r);
    const double ratio = run["ratio"].get<double>(), alpha = run["press"]["alpha_safeguard"].get<double>();
    const double eps = run["press"]["epsilon"].get<double>(), first = run["press"]["first_stage_ratio"].get<double>();
    auto press = make_press("critical_adakv(expected_attention(use_vnorm=false))");
    std::map<int64_t, std::vector<std::vector<float>>> norms;
    const auto ours = parity::run_ours(*l->model, l->f.ids, *press, Budget{ratio}, [&](Press& p, const LayerView& v) {
      norms[v.layer] = wrapper::projected_value_norms(v, wrapper::output_projection(v));
      return p.inner_presses().at(0)->score(v);
    });
    for (int64_t layer : l->f.compressed_layers(l->model->config())) {
      const auto li = static_cast<size_t>(layer);
      const std::string where = parity::layer_name(model_name, fixture, ratio, layer);
      const json& ref_layer = run["layers"][li];
      const json* ref_scores = parity::masked_inner_scores(l->f, r, li, ours.scores[li], tol, where);
      ASSERT_NE(ref_scores, nullptr) << where;
      const json& ref = *ref_scores;
      dev = std::max(dev, parity::max_rel_dev(ref, ours.scores[li]));
      // kvpress's steps on the reference scores: safeguard, pooled budgets, first stage, re-weighting.
      const size_t hkv = ref.size();
      const auto len = static_cast<int64_t>(ref[0].size());
      const auto n_kept = static_cast<int64_t>(static_cast<double>(len) * (1 - ratio));
      const auto n_safe = static_cast<int64_t>(static_cast<double>(n_kept) * alpha);
      std::vector<std::vector<double>> s(hkv);
      auto order_of = [](const std::vector<double>& x) {
        std::vector<size_t> o(x.size());
        std::iota(o.begin(), o.end(), 0);
        std::stable_sort(o.begin(), o.end(), [&](size_t a, size_t b) { return x[a] > x[b]; });
        return o;
      };
      for (size_t h = 0; h < hkv; ++h) {
        for (const auto& x : ref[h]) s[h].push_back(num(x));
        const auto o = order_of(s[h]);
        for (int64_t i = 0; i < n_safe; ++i) s[h][o[static_cast<size_t>(i)]] = FLT_MAX;
      }
      std::vector<double> pooled;
      for (const auto& x : s) pooled.insert(pooled.end(), x.begin(), x.end());
      std::sort(pooled.begin(), pooled.end(), std::greater<>());
      const double budget_cut = pooled[static_cast<size_t>(n_kept * static_cast<int64_t>(hkv)) - 1];
      auto near = [&](double a, double b) { return std::fabs(a - b) <= tol.tie_tol * std::max(1.0, std::fabs(b)); };
      for (size_t h = 0; h < hkv; ++h) {
        const auto want_v = ref_layer["kept"][h].get<std::vector<int32_t>>();
        const std::set<int32_t> want(want_v.begin(), want_v.end());
        const std::set<int32_t> got(ours.kept[li][h].begin(), ours.kept[li][h].end());
        min_j = std::min(min_j, parity::raw_jaccard(want_v, ours.kept[li][h]));
        // This head's budget is its count above the pooled cut; slots at the cut may go to any head.
        int64_t above = 0, at = 0;
        for (double x : s[h]) above += x > budget_cut && !near(x, budget_cut), at += near(x, budget_cut);
        const auto b_ref = static_cast<int64_t>(want.size());
        EXPECT_TRUE(b_ref >= above && b_ref <= above + at) << where << " head " << h << ": reference budget " << b_ref;
        const bool budget_tied = static_cast<int64_t>(got.size()) != b_ref;
        if (budget_tied) {
          EXPECT_TRUE(static_cast<int64_t>(got.size()) >= above && static_cast<int64_t>(got.size()) <= above + at)
              << where << " head " << h << ": our budget " << got.size() << ", reference " << b_ref;
        }
        // Within the head (at the reference's budget): first stage, re-weighting, top b.
        std::vector<double> w = s[h];
        const auto o1 = order_of(w);
        for (int64_t i = 0; i < static_cast<int64_t>(static_cast<double>(b_ref) * first); ++i) w[o1[static_cast<size_t>(i)]] = INFINITY;
        for (size_t i = 0; i < w.size(); ++i)
          if (w[i] < FLT_MAX) w[i] = (w[i] + eps) * norms[layer][h][i];
          else w[i] = INFINITY;
        double cut = INFINITY;
        for (int32_t p : want) cut = std::min(cut, w[static_cast<size_t>(p)]);
        for (int32_t p : got)
          if (!want.count(p)) {
            ++disagreements;
            if (!budget_tied) {
              EXPECT_TRUE(near(w[static_cast<size_t>(p)], cut)) << where << " head " << h << ": we keep " << p << " (" << w[static_cast<size_t>(p)] << ", cut " << cut << ")";
            }
          }
        for (int32_t p : want)
          if (!got.count(p)) {
            ++disagreements;
            if (!budget_tied) {
              EXPECT_TRUE(near(w[static_cast<size_t>(p)], cut)) << where << " head " << h << ": reference keeps " << p << " (" << w[static_cast<size_t>(p)] << ", cut " << cut << ")";
            }
          }
      }
      size_t want_total = 0, got_total = 0;
      for (size_t h = 0; h < hkv; ++h) want_total += ref_layer["kept"][h].size(), got_total += ours.kept[li][h].size();
      EXPECT_EQ(got_total, want_total) << where;
    }
  }
  std::printf("[ wired    ] %s/%s max relative inner-score deviation %.3g, min raw Jaccard %.3f, %d tied disagreements\n",
              model_name.c_str(), fixture.c_str(), dev, min_j, disagreements);
}

// ---------------------------------------------------------------------------------------------
// chunk (parity::check_chunk), the scores compared chunk by chunk.
void check_chunk(const std::string& model_name, const std::string& fixture, const std::string& expression, int64_t chunk,
                 const parity::Tolerance& tol) {
  parity::Report rep;
  parity::check_chunk(model_name, fixture, expression, chunk, tol, true, &rep);
  if (rep.done) std::printf("[ wired    ] %s/%s max relative score deviation %.3g\n", model_name.c_str(), fixture.c_str(), rep.max_rel_dev);
}

// Like parity::run_ours (per-layer presses only), but the session outlives the run.
struct Ran {
  parity::OurRun r;
  std::unique_ptr<Session> session;
};
Ran run_keeping_session(const Model& model, const std::vector<int32_t>& ids, Press& press, const Budget& budget, const parity::ScoreFn& score_fn) {
  SessionOptions o;
  o.kv_type_k = o.kv_type_v = KvType::F32;
  o.threads = 1;
  Ran out{{}, std::make_unique<Session>(model, o)};
  const auto n_layer = static_cast<size_t>(model.config().n_layer);
  out.r.positions_before.resize(n_layer);
  out.r.scores.resize(n_layer);
  out.r.kept.resize(n_layer);
  out.session->set_stats_request(press.needs());
  out.session->set_layer_hook([&](const LayerStats& st, KvCache& cache) {
    const LayerView view(model, st.layer, cache, st);
    press.observe(view);
    if (!st.last_chunk) return;
    for (int64_t h = 0; h < cache.shape().n_head_kv; ++h) {
      const auto p = cache.positions(st.layer, h);
      out.r.positions_before[static_cast<size_t>(st.layer)].emplace_back(p.begin(), p.end());
    }
    if (cache.window(st.layer) > 0) return;
    out.r.scores[static_cast<size_t>(st.layer)] = score_fn(press, view);
    compress_layer(press, view, budget, cache);
  });
  out.session->eval(ids);
  out.session->set_layer_hook(nullptr);
  for (size_t l = 0; l < n_layer; ++l)
    for (int64_t h = 0; h < out.session->cache().shape().n_head_kv; ++h) {
      const auto p = out.session->cache().positions(static_cast<int64_t>(l), h);
      out.r.kept[l].emplace_back(p.begin(), p.end());
    }
  return out;
}

// GGUF permutes llama's Q/K rows so that interleaved RoPE equals HF's rotate_half: our channel
// 2j+s is HF channel s*d/2 + j (NeoX-style models such as Gemma keep HF's order).
int64_t hf_channel(const ModelConfig& c, int64_t ch) { return c.rope_neox ? ch : (ch % 2) * (c.head_dim_k / 2) + ch / 2; }

// composed(snapkv, think): SnapKV's scores (press.presses[0]) and kept slots as for snapkv; then
// ThinK runs on the kept slots and really prunes key channels. The fixture does not store the
// composed ThinK's channel scores, so they are rebuilt from the reference: kvpress's
// channel score is mean_window(q^2) x mean_slots(k^2), and the think fixture holds
// mean_window(q^2) x mean(k^2) over all slots (the window queries do not depend on the eviction);
// rescaled by mean(k^2) over our kept slots / over all slots (our keys), that is the score kvpress
// computes on our kept set. Our channel scores, kept channels (in the cache) and key row bytes are
// checked against it.
void check_composed(const std::string& model_name, const parity::Tolerance& tol, double channel_rtol) {
  PARITY_OPEN_OR_SKIP(l, model_name, "composed_snapkv_think")
  auto think_fx = parity::load(model_name, "think");
  ASSERT_TRUE(think_fx);
  Exact exact;
  const ModelConfig& c = l->model->config();
  const int64_t d = c.head_dim_k;
  double dev = 0, ch_dev = 0, min_j = 1;
  int channel_swaps = 0;
  for (size_t r = 0; r < l->f.j["runs"].size(); ++r) {
    const json& run = l->f.run(r);
    const double ratio = run["ratio"].get<double>();
    const json& think_cfg = run["press"]["presses"][1];
    const double ch_ratio = think_cfg["key_channel_compression_ratio"].get<double>();
    auto press = make_press("composed(snapkv,think)",
                            {"snapkv.window_size=" + std::to_string(run["press"]["presses"][0]["window_size"].get<int64_t>()),
                             "snapkv.kernel_size=" + std::to_string(run["press"]["presses"][0]["kernel_size"].get<int64_t>()),
                             "think.key_channel_compression_ratio=" + std::to_string(ch_ratio),
                             "think.window_size=" + std::to_string(think_cfg["window_size"].get<int64_t>())});
    std::map<int64_t, KeepSets> selected;
    std::map<int64_t, std::vector<std::vector<float>>> keys0, channel_scores;
    const Ran ran = run_keeping_session(*l->model, l->f.ids, *press, Budget{ratio}, [&](Press& p, const LayerView& v) {
      const auto inner = p.inner_presses();
      selected[v.layer] = inner.at(0)->select(v, Budget{ratio});
      const wrapper::GatheredView g(v, selected[v.layer]);
      channel_scores[v.layer] = think_channel_scores(*inner.at(1), g.view());
      for (int64_t h = 0; h < v.n_head_kv(); ++h) keys0[v.layer].push_back(v.keys(h));
      return inner.at(0)->score(v);
    });
    const auto& ours = ran.r;
    const KvCache& cache = ran.session->cache();
    for (int64_t layer : l->f.compressed_layers(c)) {
      const auto li = static_cast<size_t>(layer);
      const std::string where = model_name + "/composed_snapkv_think ratio " + std::to_string(ratio) + " layer " + std::to_string(layer);
      const json* call = parity::score_call(l->f, r, li, "press.presses[0]");
      ASSERT_NE(call, nullptr) << where;
      parity::expect_scores((*call)["scores"], ours.scores[li], tol, where);
      dev = std::max(dev, parity::max_rel_dev((*call)["scores"], ours.scores[li]));
      parity::expect_kept(run["layers"][li], &(*call)["scores"], ours.kept[li], ours.scores[li], ours.positions_before[li], tol, where);
      const json& full_scores = think_fx->run(0)["layers"][li]["channel_scores"];
      for (int64_t h = 0; h < c.n_head_kv; ++h) {
        const auto hs = static_cast<size_t>(h);
        min_j = std::min(min_j, parity::raw_jaccard(run["layers"][li]["kept"][hs].get<std::vector<int32_t>>(), ours.kept[li][hs]));
        const auto& sel = selected[layer][hs];
        ASSERT_EQ(sel.size(), ours.kept[li][hs].size()) << where;
        for (size_t i = 0; i < sel.size(); ++i) ASSERT_EQ(ours.positions_before[li][hs][static_cast<size_t>(sel[i])], ours.kept[li][hs][i]) << where;
        // The reference's channel scores on our kept slots.
        const auto& k0 = keys0[layer][hs];
        const auto n_all = static_cast<int64_t>(k0.size()) / d;
        std::vector<double> want(static_cast<size_t>(d));
        for (int64_t ch = 0; ch < d; ++ch) {
          double all = 0, kept = 0;
          for (int64_t i = 0; i < n_all; ++i) all += static_cast<double>(k0[static_cast<size_t>(i * d + ch)]) * k0[static_cast<size_t>(i * d + ch)];
          for (int32_t i : sel) kept += static_cast<double>(k0[static_cast<size_t>(i * d + ch)]) * k0[static_cast<size_t>(i * d + ch)];
          const double full = num(full_scores[hs][static_cast<size_t>(hf_channel(c, ch))]);
          if (all == 0) {  // a channel zero in every key (gemma has some): its score is 0 either way
            EXPECT_EQ(full, 0.0) << where << " head " << h << " channel " << ch;
            want[static_cast<size_t>(ch)] = 0;
          } else {
            want[static_cast<size_t>(ch)] = full * (kept / static_cast<double>(sel.size())) / (all / static_cast<double>(n_all));
          }
          const double got = channel_scores[layer][hs][static_cast<size_t>(ch)];
          ch_dev = std::max(ch_dev, std::fabs(got - want[static_cast<size_t>(ch)]) / std::max(std::fabs(want[static_cast<size_t>(ch)]), 1e-12));
          EXPECT_NEAR(got, want[static_cast<size_t>(ch)], 1e-7 + channel_rtol * std::fabs(want[static_cast<size_t>(ch)]))
              << where << " head " << h << " channel " << ch;
        }
        // Pruned channels: the floor(d * ratio) lowest of those scores (a swap only at a tie of the cut).
        const auto n_pruned = static_cast<int64_t>(std::trunc(static_cast<double>(d) * ch_ratio));
        std::vector<int64_t> order(static_cast<size_t>(d));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return want[static_cast<size_t>(a)] < want[static_cast<size_t>(b)]; });
        const std::set<int64_t> want_pruned(order.begin(), order.begin() + n_pruned);
        const double cut = want[static_cast<size_t>(order[static_cast<size_t>(n_pruned - 1)])];
        const auto kept_ch = cache.key_channels(layer, h);
        ASSERT_EQ(static_cast<int64_t>(kept_ch.size()), d - n_pruned) << where << " head " << h;
        EXPECT_EQ(cache.k_row_bytes(layer, h), kept_ch.size() * sizeof(float)) << where;
        for (int64_t ch = 0; ch < d; ++ch) {
          const bool pruned = !std::binary_search(kept_ch.begin(), kept_ch.end(), static_cast<int32_t>(ch));
          if (pruned == static_cast<bool>(want_pruned.count(ch))) continue;
          ++channel_swaps;
          EXPECT_LE(std::fabs(want[static_cast<size_t>(ch)] - cut), 2 * channel_rtol * cut)
              << where << " head " << h << ": channel " << ch << (pruned ? " pruned here only" : " pruned by the reference only");
        }
      }
    }
  }
  std::printf("[ wired    ] %s/composed_snapkv_think max relative snapkv-score deviation %.3g, channel-score deviation %.3g, "
              "min raw Jaccard %.3f, %d tied channel swaps\n", model_name.c_str(), dev, ch_dev, min_j, channel_swaps);
}

// Finch with rerotate_keys (kvpress's default): kept slots as the fixture's; each kept value is
// the original's, each kept key the original rotated by i - p_i; the slots are renumbered 0..n-1
// and the pipeline continues at n (the kept count).
void check_finch_rerotated(const std::string& model_name, const parity::Tolerance& tol) {
  PARITY_OPEN_OR_SKIP(l, model_name, "finch")
  std::vector<int32_t> ids = l->f.ids;
  const auto question = l->f.j["input"]["question_ids"].get<std::vector<int32_t>>();
  ids.insert(ids.end(), question.begin(), question.end());
  Exact exact;
  const ModelConfig& c = l->model->config();
  const int64_t d = c.head_dim_k, dv = c.head_dim_v;
  double max_key_err = 0, dev = 0;
  for (size_t r = 0; r < l->f.j["runs"].size(); ++r) {
    const json& run = l->f.run(r);
    ASSERT_TRUE(run["press"]["rerotate_keys"].get<bool>());
    const double ratio = run["ratio"].get<double>();
    const std::string w = "window_size=" + std::to_string(run["window_size"].get<int64_t>());
    auto press = make_press("finch", {w});
    std::map<int64_t, KeepSets> selected;
    std::map<int64_t, std::vector<std::vector<float>>> keys0, values0;
    const Ran ran = run_keeping_session(*l->model, ids, *press, Budget{ratio}, [&](Press& p, const LayerView& v) {
      selected[v.layer] = p.select(v, Budget{ratio});
      for (int64_t h = 0; h < v.n_head_kv(); ++h) {
        keys0[v.layer].push_back(v.keys(h));
        values0[v.layer].push_back(v.values(h));
      }
      return p.score(v);
    });
    const auto n_kept = static_cast<int64_t>(static_cast<double>(ids.size()) * (1 - ratio));
    EXPECT_EQ(press->next_position(), n_kept);
    const auto& inv = l->model->weights().inv_freq_global;
    for (int64_t layer : l->f.compressed_layers(c)) {
      const auto li = static_cast<size_t>(layer);
      const std::string where = model_name + "/finch (re-rotated) ratio " + std::to_string(ratio) + " layer " + std::to_string(layer);
      std::vector<std::vector<int32_t>> kept;
      for (int64_t h = 0; h < c.n_head_kv; ++h) {
        const auto hs = static_cast<size_t>(h);
        const auto run_kv = ran.session->cache().run(layer, h);
        const auto& sel = selected[layer][hs];
        ASSERT_EQ(run_kv.len, n_kept) << where;
        ASSERT_EQ(static_cast<int64_t>(sel.size()), n_kept) << where;
        const float* k = static_cast<const float*>(run_kv.k);
        const float* v = static_cast<const float*>(run_kv.v);
        const auto& k0 = keys0[layer][hs];
        const auto& v0 = values0[layer][hs];
        kept.emplace_back();
        for (int64_t i = 0; i < n_kept; ++i) {
          ASSERT_EQ(run_kv.pos[i], i) << where;
          const int32_t j = sel[static_cast<size_t>(i)];
          kept.back().push_back(j);
          ASSERT_TRUE(std::equal(v + i * dv, v + (i + 1) * dv, v0.begin() + static_cast<std::ptrdiff_t>(j) * dv)) << where << " slot " << i;
          for (int64_t f = 0; f < d / 2; ++f) {  // in double
            const double a = static_cast<double>(i - j) * inv[static_cast<size_t>(f)];
            const int64_t x = c.rope_neox ? f : 2 * f, y = c.rope_neox ? f + d / 2 : 2 * f + 1;
            const double k0x = k0[static_cast<size_t>(j * d + x)], k0y = k0[static_cast<size_t>(j * d + y)];
            max_key_err = std::max({max_key_err, std::fabs(k[i * d + x] - (k0x * std::cos(a) - k0y * std::sin(a))),
                                    std::fabs(k[i * d + y] - (k0x * std::sin(a) + k0y * std::cos(a)))});
          }
        }
      }
      const json* call = parity::score_call(l->f, r, li, "press");
      ASSERT_NE(call, nullptr) << where;
      parity::expect_scores((*call)["scores"], ran.r.scores[li], tol, where);
      dev = std::max(dev, parity::max_rel_dev((*call)["scores"], ran.r.scores[li]));
      parity::expect_kept(run["layers"][li], &(*call)["scores"], kept, ran.r.scores[li], ran.r.positions_before[li], tol, where);
    }
    // Through the pipeline: later tokens continue at n.
    SessionOptions o;
    o.threads = 1;
    Session s(*l->model, o);
    auto again = make_press("finch", {w});
    prefill_with_press(s, ids, *again, Budget{ratio}, 0);
    EXPECT_EQ(s.next_position(), n_kept);
    EXPECT_EQ(s.cache().positions(0, 0).back(), n_kept - 1);
  }
  EXPECT_LT(max_key_err, 1e-5) << "re-rotated keys";
  std::printf("[ wired    ] %s/finch (re-rotated) max relative score deviation %.3g, max re-rotated key error %.3g\n", model_name.c_str(), dev,
              max_key_err);
}

}  // namespace

TEST(KvpressParityWired, AdaKvExpectedAttention) {
  check_adakv("stories", "adakv_expected_attention", "adakv(expected_attention)", parity::Tolerance{});
}
TEST(KvpressParityWired, AdaKvExpectedAttentionEps) {
  check_adakv("stories", "adakv_expected_attention_eps1e-2", "adakv(expected_attention(epsilon=0.01))", parity::Tolerance{});
}
TEST(KvpressParityWired, CriticalKvExpectedAttention) { check_critical("stories", parity::Tolerance{}); }
TEST(KvpressParityWired, CriticalAdaKvExpectedAttention) { check_critical_adakv("stories", parity::Tolerance{}); }

TEST(KvpressParityWiredDefaultModel, AdaKvExpectedAttention) {
  check_adakv("gemma", "adakv_expected_attention", "adakv(expected_attention)", gemma_tol());
}
TEST(KvpressParityWiredDefaultModel, AdaKvExpectedAttentionEps) {
  check_adakv("gemma", "adakv_expected_attention_eps1e-2", "adakv(expected_attention(epsilon=0.01))", gemma_tol());
}
TEST(KvpressParityWiredDefaultModel, CriticalKvExpectedAttention) { check_critical("gemma", gemma_tol()); }
TEST(KvpressParityWiredDefaultModel, CriticalAdaKvExpectedAttention) { check_critical_adakv("gemma", gemma_tol()); }

TEST(KvpressParityWired, ChunkExpectedAttention) {
  check_chunk("stories", "chunk_expected_attention_32", "chunk(expected_attention, chunk_length=32, parity=true)", 32, parity::Tolerance{});
}
TEST(KvpressParityWiredDefaultModel, ChunkExpectedAttention) {
  check_chunk("gemma", "chunk_expected_attention_64", "chunk(expected_attention, chunk_length=64, parity=true)", 64, gemma_tol());
}

TEST(KvpressParityWired, ComposedSnapKvThink) { check_composed("stories", parity::Tolerance{}, 1e-4); }
TEST(KvpressParityWiredDefaultModel, ComposedSnapKvThink) { check_composed("gemma", gemma_tol(), 2e-3); }
TEST(KvpressParityWired, FinchRerotated) { check_finch_rerotated("stories", parity::Tolerance{}); }

// Gemma has sliding-window layers, which keep their original positions: Finch's re-rotation is
// refused with a clear error; rerotate_keys=false compresses and keeps the positions.
TEST(KvpressParityWiredDefaultModel, FinchRerotationRefused) {
  const std::string path = test_paths::gemma_model();
  if (path.empty()) GTEST_SKIP() << "default model not present";
  auto model = Model::load(path);
  std::vector<int32_t> ids(80, 300);
  ids[0] = 2;
  {
    Session s(*model, SessionOptions{});
    auto press = make_press("finch", {"window_size=8"});
    try {
      prefill_with_press(s, ids, *press, Budget{0.5}, 0);
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("sliding-window"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("rerotate_keys=false"), std::string::npos) << e.what();
    }
  }
  Session s(*model, SessionOptions{});
  auto press = make_press("finch", {"window_size=8", "rerotate_keys=false"});
  prefill_with_press(s, ids, *press, Budget{0.5}, 0);
  EXPECT_EQ(s.next_position(), 80);
  for (int64_t layer = 0; layer < model->config().n_layer; ++layer)
    if (!model->config().layer_sliding[static_cast<size_t>(layer)]) {
      EXPECT_EQ(s.cache().positions(layer, 0).size(), 40u);
      EXPECT_EQ(s.cache().positions(layer, 0).back(), 79);
    }
}

// The CLI runs composed(snapkv, think): slots evicted by snapkv and key channels pruned by think,
// both visible in kv_bytes_held.
TEST(KvpressParityWired, CliComposedSnapKvThink) {
  const std::string base = "generate -m " + test_paths::stories260k() +
                           " -p 'Once upon a time there was a little girl named Lily. She loved to play outside with her dog.' -n 4 --json -t 1"
                           " --ratio 0.5 --press-opt snapkv.window_size=8";
  const CliResult snap = run_cli(base + " --press 'composed(snapkv)'");
  const CliResult both = run_cli(base + " --press 'composed(snapkv,think)' --press-opt think.key_channel_compression_ratio=0.5");
  const CliResult full = run_cli("generate -m " + test_paths::stories260k() +
                                 " -p 'Once upon a time there was a little girl named Lily. She loved to play outside with her dog.' -n 4 --json -t 1");
  ASSERT_EQ(snap.status, 0) << snap.err;
  ASSERT_EQ(both.status, 0) << both.err;
  ASSERT_EQ(full.status, 0) << full.err;
  const auto js = nlohmann::json::parse(snap.out), jb = nlohmann::json::parse(both.out), jf = nlohmann::json::parse(full.out);
  EXPECT_EQ(jb["press"], "composed(snapkv,think)");
  EXPECT_EQ(jb["kv_lengths"], js["kv_lengths"]);  // think evicts no slot
  int64_t slots = 0, full_slots = 0;
  for (const auto& layer : jb["kv_lengths"])
    for (const auto& len : layer) slots += len.get<int64_t>();
  for (const auto& layer : jf["kv_lengths"])
    for (const auto& len : layer) full_slots += len.get<int64_t>();
  EXPECT_LT(2 * slots, full_slots + 2 * 20 * 4);  // about half the prompt's slots (plus the 3 decoded tokens)
  // f16 cache, head_dim 8: a slot holds K (16 bytes, 8 after pruning half the channels), V (16) and its position (4).
  ASSERT_EQ(jb["kv_type"], "f16");
  EXPECT_EQ(js["kv_bytes_held"].get<int64_t>(), slots * (16 + 16 + 4));
  EXPECT_EQ(jb["kv_bytes_held"].get<int64_t>(), slots * (8 + 16 + 4));
  EXPECT_EQ(jb["output_tokens"].size(), 4u);
}

// chunk(expected_attention): one chunk covering the whole context is expected_attention itself,
// with whole-context statistics (default) and as a standalone context (parity=true); shorter
// chunks differ between the two modes; parity=true needs every query row of a chunk at once.
TEST(KvpressParityWired, ChunkExpectedAttentionModes) {
  auto model = Model::load(test_paths::stories260k());
  auto f = parity::load("stories", "chunk_expected_attention_32");
  ASSERT_TRUE(f);
  const Budget b{0.5};
  auto plain = make_press("expected_attention");
  const auto want = parity::run_ours(*model, f->ids, *plain, b);
  for (const char* expr : {"chunk(expected_attention, chunk_length=1024)", "chunk(expected_attention, chunk_length=1024, parity=true)"}) {
    auto p = make_press(expr);
    const auto got = parity::run_ours(*model, f->ids, *p, b);
    for (size_t l = 0; l < got.scores.size(); ++l) {
      EXPECT_EQ(got.kept[l], want.kept[l]) << expr << " layer " << l;
      for (size_t h = 0; h < got.scores[l].size(); ++h)
        for (size_t i = 0; i < got.scores[l][h].size(); ++i)
          ASSERT_FLOAT_EQ(got.scores[l][h][i], want.scores[l][h][i]) << expr << " layer " << l << " head " << h << " slot " << i;
    }
  }
  auto ours = make_press("chunk(expected_attention, chunk_length=32)");
  auto upstream = make_press("chunk(expected_attention, chunk_length=32, parity=true)");
  const auto a = parity::run_ours(*model, f->ids, *ours, b), c = parity::run_ours(*model, f->ids, *upstream, b);
  double diff = 0;
  for (size_t i = 32; i < a.scores[1][0].size(); ++i) diff = std::max(diff, static_cast<double>(std::fabs(a.scores[1][0][i] - c.scores[1][0][i])));
  EXPECT_GT(diff, 1e-4);
  try {
    parity::run_ours(*model, f->ids, *make_press("chunk(expected_attention, chunk_length=32, parity=true)"), b, parity::root_scores, 16);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("last prefill chunk"), std::string::npos) << e.what();
  }
}
