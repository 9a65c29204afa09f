#pragma once
// Parity with NVIDIA kvpress: runs a native press on the exact input of a committed kvpress
// fixture (tests/fixtures/kvpress/, made by tests/reference/kvpress/make_kvpress_fixtures.py)
// and compares per (layer, KV head) the scores and the kept positions.
//
// Kept sets: every disagreement must be a near-tie in the reference (its reference score within
// `tie_tol` of the reference cut), and the per-head Jaccard index must reach `min_jaccard`.
// torch's topk orders ties arbitrarily, so exact ties are always disagreements we allow.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "fixture_json.h"
#include "kernels/matmul.h"
#include "kvsqueeze/press.h"
#include "kvsqueeze/session.h"
#include "test_paths.h"

namespace parity {

using nlohmann::json;
using namespace kvsqueeze;

using fixture_json::num;

// "model/fixture ratio R layer L", how failures name the layer they are about.
inline std::string layer_name(const std::string& model, const std::string& fixture, double ratio, int64_t layer) {
  return model + "/" + fixture + " ratio " + std::to_string(ratio) + " layer " + std::to_string(layer);
}

struct Fixture {
  json j;
  std::string model_path;
  std::vector<int32_t> ids;
  bool gemma = false;
  const json& run(size_t i) const { return j["runs"][i]; }
  // Layers a native cache compresses (gemma: only the global ones; sliding layers keep their window).
  std::vector<int64_t> compressed_layers(const ModelConfig& c) const {
    std::vector<int64_t> out;
    for (int64_t l = 0; l < c.n_layer; ++l)
      if (!c.layer_sliding[static_cast<size_t>(l)]) out.push_back(l);
    return out;
  }
};

// Loads tests/fixtures/kvpress/{model}/{name}.json; model is "stories" or "gemma".
inline std::optional<Fixture> load(const std::string& model, const std::string& name) {
  Fixture f;
  std::ifstream in(test_paths::fixtures() + "/kvpress/" + model + "/" + name + ".json");
  if (!in) {
    ADD_FAILURE() << "missing fixture " << model << "/" << name;
    return std::nullopt;
  }
  f.j = json::parse(in);
  f.gemma = model == "gemma";
  f.model_path = f.gemma ? test_paths::gemma_model() : test_paths::stories260k();
  if (f.model_path.empty()) return std::nullopt;
  f.ids = f.j["input"]["ids"].get<std::vector<int32_t>>();
  return f;
}

// What our press did on the fixture's input.
struct OurRun {
  std::vector<std::vector<std::vector<int32_t>>> positions_before;  // [layer][head]
  std::vector<LayerScores> scores;                                  // [layer] (empty: not scored)
  std::vector<std::vector<std::vector<int32_t>>> kept;              // [layer][head] positions after
};

using ScoreFn = std::function<LayerScores(Press&, const LayerView&)>;

inline LayerScores root_scores(Press& p, const LayerView& v) { return p.score(v); }

// Prefills `ids` with an f32 cache (the reference runs in fp32), compressing like the pipeline
// does, and records what happened. score_fn (if set) is called on each compressed layer first.
inline OurRun run_ours(const Model& model, const std::vector<int32_t>& ids, Press& press, const Budget& budget,
                       const ScoreFn& score_fn = root_scores, int64_t chunk = 512) {
  SessionOptions o;
  o.kv_type_k = o.kv_type_v = KvType::F32;
  o.chunk = chunk;
  o.threads = 1;
  Session session(model, o);
  const int64_t n_layer = model.config().n_layer;
  OurRun out;
  out.positions_before.resize(static_cast<size_t>(n_layer));
  out.scores.resize(static_cast<size_t>(n_layer));
  out.kept.resize(static_cast<size_t>(n_layer));
  session.set_stats_request(press.needs());
  const bool deferred = press.traits().needs_all_layers;
  session.set_layer_hook([&](const LayerStats& st, KvCache& cache) {
    const LayerView view(model, st.layer, cache, st);
    press.observe(view);
    if (!st.last_chunk) return;
    auto& pos = out.positions_before[static_cast<size_t>(st.layer)];
    for (int64_t h = 0; h < cache.shape().n_head_kv; ++h) {
      const auto p = cache.positions(st.layer, h);
      pos.emplace_back(p.begin(), p.end());
    }
    if (cache.window(st.layer) > 0) return;
    if (score_fn) out.scores[static_cast<size_t>(st.layer)] = score_fn(press, view);
    if (!deferred) compress_layer(press, view, budget, cache);
  });
  session.eval(ids);
  session.set_layer_hook(nullptr);
  if (deferred) press.finish(session, budget);
  for (int64_t l = 0; l < n_layer; ++l)
    for (int64_t h = 0; h < session.cache().shape().n_head_kv; ++h) {
      const auto p = session.cache().positions(l, h);
      out.kept[static_cast<size_t>(l)].emplace_back(p.begin(), p.end());
    }
  return out;
}

// The fixture's score calls for a layer of run `r` (the first run's where they are the same).
inline const json& score_calls(const Fixture& f, size_t r, size_t layer_index) {
  const json& calls = f.run(r)["layers"][layer_index]["score_calls"];
  return calls.is_string() ? f.run(0)["layers"][layer_index]["score_calls"] : calls;
}

// The fixture's score call of `scorer` ("press", "press.press", ...) for a layer of run `r`,
// resolving "same_as_first_run".
inline const json* score_call(const Fixture& f, size_t r, size_t layer_index, const std::string& scorer) {
  const json* calls = &score_calls(f, r, layer_index);
  for (size_t i = 0; i < calls->size(); ++i) {
    const json& c = (*calls)[i];
    if (c.value("scorer", "") != scorer) continue;
    if (c.contains("same_as_first_run")) {
      const json& first = f.run(0)["layers"][layer_index]["score_calls"];
      for (const auto& fc : first)
        if (fc.value("scorer", "") == scorer) return &fc;
    }
    return &c;
  }
  return nullptr;
}

struct Tolerance {
  double score_rtol = 1e-4;
  double score_atol = 1e-6;
  double tie_tol = 1e-6;      // reference-score distance from the cut within which a swap is allowed
  double min_jaccard = 0.99;  // per head
};

// The default model runs quantized weights dequantized to fp32: scores agree to ~1e-5, bounded
// here at 2e-3 relative (a few slots whose scores are tiny sit near the absolute floor).
inline Tolerance gemma_tolerance() {
  Tolerance t;
  t.score_rtol = 2e-3;
  t.score_atol = 1e-6;
  t.tie_tol = 1e-5;
  t.min_jaccard = 0.99;
  return t;
}

// Largest relative deviation of our finite scores from the reference's, where the reference is
// above the absolute tolerance (for the report).
inline double max_rel_dev(const json& ref, const LayerScores& ours) {
  double dev = 0;
  for (size_t h = 0; h < ours.size(); ++h)
    for (size_t i = 0; i < ours[h].size(); ++i)
      if (std::isfinite(ours[h][i])) {
        const double want = num(ref[h][i]);
        if (std::fabs(want) < 1e37 && std::fabs(want) > 1e-6) dev = std::max(dev, std::fabs(ours[h][i] - want) / std::max(std::fabs(want), 1e-12));
      }
  return dev;
}

// Scores: ours +inf (protected) must be protected in the reference too (padded above every
// other score); finite scores agree within atol + rtol * |ref|.
inline void expect_scores(const json& ref, const LayerScores& ours, const Tolerance& tol, const std::string& where) {
  ASSERT_EQ(ref.size(), ours.size()) << where;
  for (size_t h = 0; h < ours.size(); ++h) {
    const auto& r = ref[h];
    ASSERT_EQ(r.size(), ours[h].size()) << where << " head " << h;
    double max_unprotected = -INFINITY;
    for (size_t i = 0; i < r.size(); ++i)
      if (std::isfinite(ours[h][i])) max_unprotected = std::max(max_unprotected, num(r[i]));
    int bad = 0;
    for (size_t i = 0; i < r.size() && bad < 5; ++i) {
      const double want = num(r[i]), got = ours[h][i];
      if (std::isinf(got)) {
        if (!(want >= max_unprotected)) {
          ADD_FAILURE() << where << " head " << h << " slot " << i << ": protected here, reference score " << want;
          ++bad;
        }
      } else if (!(std::fabs(got - want) <= tol.score_atol + tol.score_rtol * std::fabs(want))) {
        ADD_FAILURE() << where << " head " << h << " slot " << i << ": score " << got << ", reference " << want;
        ++bad;
      }
    }
  }
}

// Kept positions of one layer against the fixture's, with reference scores for the near-tie rule.
inline void expect_kept(const json& ref_layer, const json* ref_scores, const std::vector<std::vector<int32_t>>& ours,
                        const LayerScores& our_scores, const std::vector<std::vector<int32_t>>& ours_before, const Tolerance& tol,
                        const std::string& where) {
  const json& kept = ref_layer["kept"];
  for (size_t h = 0; h < ours.size(); ++h) {
    if (kept.is_string()) {  // "all"
      continue;
    }
    const auto want_v = kept[h].get<std::vector<int32_t>>();
    const std::set<int32_t> want(want_v.begin(), want_v.end()), got(ours[h].begin(), ours[h].end());
    // Positions whose reference score sits at the cut are ties (torch orders them arbitrarily):
    // they may go either way and are left out of the Jaccard index.
    double cut = INFINITY;
    if (ref_scores)
      for (int32_t p : want) cut = std::min(cut, num((*ref_scores)[h][static_cast<size_t>(p)]));
    auto at_cut = [&](int32_t p) { return ref_scores && std::fabs(num((*ref_scores)[h][static_cast<size_t>(p)]) - cut) <= tol.tie_tol; };
    size_t inter = 0, uni = 0;
    for (int32_t p : got) {
      if (want.count(p)) ++inter, ++uni;
      else if (!at_cut(p)) ++uni;
    }
    for (int32_t p : want)
      if (!got.count(p) && !at_cut(p)) ++uni;
    const double jaccard = uni ? static_cast<double>(inter) / static_cast<double>(uni) : 1.0;
    EXPECT_GE(jaccard, tol.min_jaccard) << where << " head " << h << ": kept " << got.size() << ", reference " << want.size();
    // More protected slots than the budget: we keep them all (docs/METHODS.md §0), kvpress keeps
    // an arbitrary subset of its tied pads. Then the reference must be a subset of ours.
    bool all_protected = !our_scores.empty() && got.size() > want.size();
    if (all_protected)
      for (size_t i = 0; i < ours_before[h].size(); ++i)
        if (got.count(ours_before[h][i]) && !std::isinf(our_scores[h][i])) all_protected = false;
    if (all_protected) {
      for (int32_t p : want) EXPECT_TRUE(got.count(p)) << where << " head " << h << ": reference keeps " << p;
      continue;
    }
    EXPECT_EQ(got.size(), want.size()) << where << " head " << h;
    if (!ref_scores) {
      EXPECT_EQ(got, want) << where << " head " << h;
      continue;
    }
    // Every disagreement must sit at the reference cut (positions index the reference scores).
    const auto& s = (*ref_scores)[h];
    for (int32_t p : want) {
      if (!got.count(p)) {
        EXPECT_LE(std::fabs(num(s[static_cast<size_t>(p)]) - cut), tol.tie_tol) << where << " head " << h << ": reference keeps " << p;
      }
    }
    for (int32_t p : got) {
      if (!want.count(p)) {
        EXPECT_LE(std::fabs(num(s[static_cast<size_t>(p)]) - cut), tol.tie_tol) << where << " head " << h << ": we keep " << p;
      }
    }
  }
}

// A chunk wrapper's inner score calls of one layer ("press.press", one per chunk of at most
// `chunk` slots, consecutive positions) joined per head into `concat`; `len` gets the total.
inline void concat_chunk_calls(const json& calls, int64_t chunk, const std::string& where, json& concat, int32_t& len) {
  concat = json::array();
  len = 0;
  for (const auto& c : calls) {
    ASSERT_EQ(c["scorer"], "press.press") << where;
    for (size_t h = 0; h < c["scores"].size(); ++h) {
      if (concat.size() <= h) concat.push_back(json::array());
      for (const auto& x : c["scores"][h]) concat[h].push_back(x);
      const auto pos = c["positions"][h].get<std::vector<int32_t>>();
      for (size_t i = 0; i < pos.size(); ++i) ASSERT_EQ(pos[i], len + static_cast<int32_t>(i)) << where << ": chunk positions";
    }
    ASSERT_LE(c["n"].get<int64_t>(), chunk) << where;
    len += c["n"].get<int32_t>();
  }
}

// Chunk-wise presses (chunk): each chunk of `chunk` slots has its own cut, so kept sets are
// compared chunk by chunk. ref_kept: the reference layer's kept positions per head; scores:
// the reference's and ours over the whole layer (positions = slot indices). With
// `compare_scores` the chunk's scores are compared too (kvpress pads each chunk's protected
// slots with that chunk's max + 1).
inline void expect_kept_per_chunk(const json& ref_kept, const json& ref_scores_all, const LayerScores& our_scores_all,
                                  const std::vector<std::vector<int32_t>>& our_kept, int64_t len, int64_t chunk, const Tolerance& tol,
                                  const std::string& where, bool compare_scores) {
  for (int64_t start = 0; start < len; start += chunk) {
    const int64_t end = std::min(len, start + chunk);
    json ref_layer, ref_scores = json::array();
    ref_layer["kept"] = json::array();
    std::vector<std::vector<int32_t>> got, before;
    LayerScores our_scores;
    for (size_t h = 0; h < ref_scores_all.size(); ++h) {
      json kept = json::array(), sc = json::array();
      for (int32_t p : ref_kept[h].get<std::vector<int32_t>>())
        if (p >= start && p < end) kept.push_back(p - start);
      ref_layer["kept"].push_back(kept);
      got.emplace_back();
      for (int32_t p : our_kept[h])
        if (p >= start && p < end) got.back().push_back(static_cast<int32_t>(p - start));
      before.emplace_back();
      our_scores.emplace_back();
      for (int64_t i = start; i < end; ++i) {
        sc.push_back(ref_scores_all[h][static_cast<size_t>(i)]);
        before.back().push_back(static_cast<int32_t>(i - start));
        our_scores.back().push_back(our_scores_all[h][static_cast<size_t>(i)]);
      }
      ref_scores.push_back(sc);
    }
    const std::string at = where + " chunk at " + std::to_string(start);
    if (compare_scores) expect_scores(ref_scores, our_scores, tol, at);
    expect_kept(ref_layer, &ref_scores, got, our_scores, before, tol, at);
  }
}

// The reference runs in fp32: while alive, our matmuls take fp32 activations, not the 8-bit path.
struct ExactActivations {
  ExactActivations() { kernels::set_exact_activations(true); }
  ~ExactActivations() { kernels::set_exact_activations(false); }
  ExactActivations(const ExactActivations&) = delete;
  ExactActivations& operator=(const ExactActivations&) = delete;
};

// A fixture with its model loaded; nullopt when the fixture's model is absent (load()'s rule).
struct LoadedFixture {
  Fixture f;
  std::unique_ptr<Model> model;
};
inline std::optional<LoadedFixture> open(const std::string& model_name, const std::string& fixture) {
  auto f = load(model_name, fixture);
  if (!f) return std::nullopt;
  EXPECT_FALSE(f->j.contains("skipped"));
  LoadedFixture l{*f, Model::load(f->model_path)};
  return l;
}

// `auto l = open(model_name, fixture)`, returning from the (void) check when it is absent:
// skipped for the default model, which may not be present; a failure (load's) otherwise.
#define PARITY_OPEN_OR_SKIP(l, model_name, fixture)                           \
  auto l = parity::open(model_name, fixture);                                 \
  if (!l) {                                                                   \
    if ((model_name) == "gemma") GTEST_SKIP() << "default model not present"; \
    return;                                                                   \
  }

// What a check saw, for a report line; `done` once every run was compared.
struct Report {
  double max_rel_dev = 0, min_jaccard = 1;
  bool done = false;
};

// Per-head Jaccard index of two kept sets, ties counted as disagreements (for the report).
inline double raw_jaccard(const std::vector<int32_t>& a_v, const std::vector<int32_t>& b_v) {
  const std::set<int32_t> a(a_v.begin(), a_v.end()), b(b_v.begin(), b_v.end());
  size_t inter = 0;
  for (int32_t p : a) inter += b.count(p);
  const size_t uni = a.size() + b.size() - inter;
  return uni ? static_cast<double>(inter) / static_cast<double>(uni) : 1.0;
}

// Our scores without the protected (+inf) slots, to compare with a reference call that scored
// only the others.
inline LayerScores finite_only(LayerScores scores) {
  for (auto& s : scores) {
    std::vector<float> kept;
    for (float x : s)
      if (std::isfinite(x)) kept.push_back(x);
    s = kept;
  }
  return scores;
}

// chunk(inner) as `expression`: one reference score call per chunk of `chunk` slots, with its
// positions; ours are concatenated (chunk's score()), and the kept sets compared chunk by chunk
// (each chunk has its own cut). With `scores_per_chunk` the scores are compared chunk by chunk
// too (kvpress pads each chunk's protected slots with that chunk's max + 1).
inline void check_chunk(const std::string& model_name, const std::string& fixture, const std::string& expression, int64_t chunk,
                        const Tolerance& tol, bool scores_per_chunk, Report* report = nullptr) {
  PARITY_OPEN_OR_SKIP(l, model_name, fixture)
  ExactActivations exact;
  Report rep;
  for (size_t r = 0; r < l->f.j["runs"].size(); ++r) {
    const double ratio = l->f.run(r)["ratio"].get<double>();
    auto press = make_press(expression);
    const auto ours = run_ours(*l->model, l->f.ids, *press, Budget{ratio});
    for (int64_t layer : l->f.compressed_layers(l->model->config())) {
      const auto li = static_cast<size_t>(layer);
      const std::string where = layer_name(model_name, fixture, ratio, layer);
      json concat;
      int32_t next = 0;
      concat_chunk_calls(score_calls(l->f, r, li), chunk, where, concat, next);
      ASSERT_FALSE(::testing::Test::HasFatalFailure()) << where;
      if (scores_per_chunk) {
        ASSERT_EQ(ours.scores[li].size(), concat.size()) << where;
        ASSERT_EQ(ours.scores[li][0].size(), concat[0].size()) << where;
      } else {
        expect_scores(concat, ours.scores[li], tol, where);
      }
      rep.max_rel_dev = std::max(rep.max_rel_dev, max_rel_dev(concat, ours.scores[li]));
      expect_kept_per_chunk(l->f.run(r)["layers"][li]["kept"], concat, ours.scores[li], ours.kept[li], next, chunk, tol, where,
                            scores_per_chunk);
    }
  }
  rep.done = true;
  if (report) *report = rep;
}

struct Case {
  std::string fixture;                     // file name without .json
  std::string expression;                  // our press expression
  std::vector<std::string> options;        // --press-opt style
  std::string scorer = "press";            // the fixture score call to compare ("" = none)
  ScoreFn ours = root_scores;              // how to get our scores of that call
  Tolerance tol;
  std::function<Budget(const json& run)> budget;  // default: {ratio = run.ratio}
};

// Runs every ratio of the fixture and compares each compressed layer.
inline void check(const std::string& model_name, const Case& c) {
  auto f = load(model_name, c.fixture);
  if (!f) {
    if (model_name == "gemma") GTEST_SKIP() << "default model not present (scripts/get_default_model.sh)";
    return;
  }
  ASSERT_FALSE(f->j.contains("skipped")) << f->j["skipped"];
  auto model = Model::load(f->model_path);
  ExactActivations exact;
  for (size_t r = 0; r < f->j["runs"].size(); ++r) {
    const json& run = f->run(r);
    Budget b;
    if (c.budget) b = c.budget(run);
    else b.ratio = run["ratio"].is_null() ? 0.0 : run["ratio"].get<double>();
    auto press = make_press(c.expression, c.options);
    const OurRun ours = run_ours(*model, f->ids, *press, b, c.scorer.empty() ? ScoreFn{} : c.ours);
    for (int64_t l : f->compressed_layers(model->config())) {
      const size_t li = static_cast<size_t>(l);
      const std::string where = layer_name(model_name, c.fixture, b.ratio, l);
      const json* ref_scores = nullptr;
      if (!c.scorer.empty()) {
        const json* call = score_call(*f, r, li, c.scorer);
        ASSERT_NE(call, nullptr) << where << ": no score call '" << c.scorer << "'";
        ref_scores = &(*call)["scores"];
        expect_scores(*ref_scores, ours.scores[li], c.tol, where);
      }
      expect_kept(run["layers"][li], ref_scores, ours.kept[li], ours.scores[li], ours.positions_before[li], c.tol, where);
    }
  }
}

}  // namespace parity
