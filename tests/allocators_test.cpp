// Head/layer-adaptive allocators (docs/METHODS.md §4): the original AdaKV rule, HeadKV and
// DiliLazyKV against hand-computed examples and against upstream's arithmetic run by
// tests/reference/allocators/make_allocator_fixtures.py on the fixed inputs of
// tests/fixtures/allocators/; then on stories260K: per-head kept lengths equal the computed
// budgets, sums are exact, the bytes held follow, global_topk and pyramidkv really evict per
// layer/head, per_layer reads its ratios from a file, and every bad head-score file is one
// clear error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <numeric>

#include <nlohmann/json.hpp>

#include "head_scores_writer.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"
#include "kvsqueeze/press_pipeline.h"
#include "kvsqueeze/session.h"
#include "press/head_budget.h"
#include "press/pyramidkv_budget.h"
#include "test_paths.h"

using namespace kvsqueeze;
namespace hb = kvsqueeze::head_budget;

namespace {

std::vector<int32_t> prompt() {
  std::vector<int32_t> ids = {1};
  for (int i = 0; i < 150; ++i) ids.push_back(260 + (i * 37) % 170);
  return ids;
}

nlohmann::json load_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

int64_t sum(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), int64_t{0}); }

// Runs `hook` on every layer after its attention (f32 cache), without compressing.
void run_hooked(const Model& model, const StatsRequest& req, const std::function<void(const LayerView&)>& hook) {
  Session s(model, {.threads = 1, .kv_type_k = KvType::F32, .kv_type_v = KvType::F32});
  s.set_stats_request(req);
  s.set_layer_hook([&](const LayerStats& st, KvCache& cache) { hook(LayerView(model, st.layer, cache, st)); });
  s.eval(prompt());
  s.set_layer_hook(nullptr);
}

size_t bytes_for(const KvCache& cache) {
  size_t want = 0;
  for (int64_t l = 0; l < cache.shape().n_layer; ++l)
    for (int64_t h = 0; h < cache.shape().n_head_kv; ++h)
      want += static_cast<size_t>(cache.length(l, h)) * (cache.k_row_bytes(l, h) + cache.v_row_bytes() + 4);
  return want;
}

std::string stories_scores(const std::string& tag, const std::string& model = "stories260K") {
  return test_head_scores::write(tag, 5, 8, model);  // stories260K: 5 layers, 8 query heads, 4 KV heads
}

}  // namespace

// --- arithmetic -----------------------------------------------------------------------------------

TEST(AllocatorMath, PythonFloorDivisionAndRounding) {
  EXPECT_EQ(hb::py_floordiv(112, 1.351), 82.0);  // 112 / 1.351 = 82.9
  EXPECT_EQ(hb::py_floordiv(10, 0.1), 99.0);     // Python: 10 // 0.1 == 99.0 (0.1 is above 1/10), floor(10/0.1) == 100
  EXPECT_EQ(hb::py_floordiv(1.0, 0.1), 9.0);
  EXPECT_EQ(hb::py_floordiv(504, 1.005), 501.0);
  EXPECT_EQ(hb::py_floordiv(7, 2.0), 3.0);
  EXPECT_EQ(hb::py_round(2.5), 2.0);  // half to even
  EXPECT_EQ(hb::py_round(3.5), 4.0);
  EXPECT_EQ(hb::py_round(-0.5), -0.0);
}

TEST(AllocatorMath, FitToTotalIsLargestRemainderAndRedistributes) {
  // Targets 9.5, 9.5, 11 rounded half to even: 10, 10, 11 = 31 > 30. Both 10s exceed their
  // target by 0.5; ties take from the later head: 10, 9, 11.
  EXPECT_EQ(hb::fit_to_total({9.5, 9.5, 11}, {10, 10, 11}, {100, 100, 100}, 30), (std::vector<int64_t>{10, 9, 11}));
  // Targets 2.4, 0.8 rounded: 2, 1 = 3 < 4: the head furthest below its target (2.4 - 2 = 0.4
  // against 0.8 - 1 = -0.2) gets the unit: 3, 1.
  EXPECT_EQ(hb::fit_to_total({2.4, 0.8}, {2, 1}, {4, 4}, 4), (std::vector<int64_t>{3, 1}));
  // A head limited to 2 slots: the 6 it cannot use go one unit at a time to the head furthest
  // below its target: heads 1 and 2 both at gap 0 (earlier first), then alternating: 2, 9, 5.
  const auto fit = hb::fit_to_total({8, 6, 2}, {8, 6, 2}, {2, 10, 10}, 16);
  EXPECT_EQ(sum(fit), 16);
  EXPECT_EQ(fit, (std::vector<int64_t>{2, 9, 5}));
  // More than the room: everything.
  EXPECT_EQ(hb::fit_to_total({5, 5}, {5, 5}, {3, 4}, 10), (std::vector<int64_t>{3, 4}));
}

TEST(AllocatorMath, HeadKvHandComputed) {
  // s = 1, 1, 2 (N = 3), B = 10, beta = 5, temp = 1: p = .25, .25, .5; B // beta = 2;
  // pool = 2 * 3 = 6; min_n = 10 - 2 = 8; targets 1.5 + 8 = 9.5, 9.5, 3 + 8 = 11;
  // upstream rounds half to even: 10, 10, 11 (sum 31 != N B = 30).
  const auto r = hb::headkv_caps({1, 1, 2}, 10, 5.0, 1.0);
  EXPECT_EQ(r.raw, (std::vector<int64_t>{10, 10, 11}));
  EXPECT_DOUBLE_EQ(r.target[0], 9.5);
  EXPECT_DOUBLE_EQ(r.target[2], 11.0);
  // temp = 2: p^2 = 1/16, 1/16, 1/4, renormalised: 1/6, 1/6, 2/3; targets 8 + 1, 8 + 1, 8 + 4.
  const auto t = hb::headkv_caps({1, 1, 2}, 10, 5.0, 2.0);
  EXPECT_EQ(t.raw, (std::vector<int64_t>{9, 9, 12}));
}

TEST(AllocatorMath, DiliLazyKvHandComputed) {
  // One layer of two heads, S = 1, 3 (temp 1); layer sum 4: S' = 1 + .01 * .25 = 1.0025,
  // 3 + .01 * .75 = 3.0075; sum 4.01; P = .25, .75. B = 10, beta = 2: B // beta = 5,
  // pool = 5 * 2 - 2 * .5 = 9, min_n = 5: caps round(.25 * 9 + 5 + .5) = round(7.75) = 8,
  // round(.75 * 9 + 5.5) = round(12.25) = 12 (sum 20 = N B).
  const auto r = hb::dililazykv_caps({1, 3}, 2, 10, 2.0, 1.0);
  EXPECT_EQ(r.raw, (std::vector<int64_t>{8, 12}));
  // Two layers (1 | 1), (2 | 0): the layer share moves 1% of each head's within-layer share:
  // S' = 1.005, 1.005, 2.01, 0; sum 4.02; P = .25, .25, .5, 0; B = 4, beta = 2: B // beta = 2,
  // pool = 2 * 4 - 4 * .5 = 6, min 2: round(1.5 + 2.5) = 4, 4, round(3 + 2.5) = 6 (5.5 -> 6),
  // round(0 + 2.5) = 2.
  const auto two = hb::dililazykv_caps({1, 1, 2, 0}, 2, 4, 2.0, 1.0);
  EXPECT_EQ(two.raw, (std::vector<int64_t>{4, 4, 6, 2}));
}

TEST(AllocatorMath, AdaKvOriginalHandComputed) {
  // Two heads, B' = 2 each (pooled top 4): .9 .8 .6 (head 0) and .3 (head 1): c = 3, 1.
  const std::vector<std::vector<float>> s = {{0.9f, 0.8f, 0.6f, 0.05f}, {0.3f, 0.2f, 0.15f, 0.01f}};
  // alpha .5: floor = int(2 * .5) = 1; caps round(3 * .5 + 1) = round(2.5) = 2, round(1.5) = 2.
  auto r = hb::adakv_original_caps(s, {2, 2}, 0.5, false);
  EXPECT_EQ(r.counts, (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(r.raw, (std::vector<int64_t>{2, 2}));
  // alpha .2: floor = int(.4) = 0; caps round(3 * .8) = round(2.4) = 2, round(.8) = 1: sum 3 < 4;
  // the fit gives the unit to head 0 (2.4 - 2 = .4 > .8 - 1): 3, 1.
  r = hb::adakv_original_caps(s, {2, 2}, 0.2, false);
  EXPECT_EQ(r.raw, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(hb::fit_to_total(r.target, r.raw, {4, 4}, 4), (std::vector<int64_t>{3, 1}));
}

// --- against upstream's arithmetic (reference fixture) ----------------------------------------------

TEST(AllocatorReference, HeadKvAndDiliLazyKvCapsEqualUpstream) {
  const auto ref = load_json(test_paths::fixtures() + "/allocators/reference_caps.json");
  std::map<std::string, hb::HeadScoreFile> files;
  int cases = 0, mismatches = 0, fitted_far = 0;
  for (const auto& c : ref.at("head_file_cases")) {
    const std::string name = c.at("file");
    if (!files.count(name)) files[name] = hb::read_head_scores(test_paths::fixtures() + "/allocators/" + name);
    const auto kv = hb::kv_head_scores(files[name], c.at("n_layer"), c.at("n_head"), c.at("n_head_kv"));
    std::vector<double> flat;
    for (const auto& row : kv) flat.insert(flat.end(), row.begin(), row.end());
    const int64_t base = c.at("base");
    const double beta = c.at("beta"), temp = c.at("temp");
    const bool headkv = c.at("formula") == "headkv";
    const auto r = headkv ? hb::headkv_caps(flat, base, beta, temp) : hb::dililazykv_caps(flat, c.at("n_head_kv"), base, beta, temp);
    const auto want = c.at("caps").get<std::vector<int64_t>>();
    ASSERT_EQ(r.raw.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
      if (r.raw[i] != want[i]) {
        ++mismatches;
        ADD_FAILURE() << c.at("formula") << " " << name << " B=" << base << " beta=" << beta << " temp=" << temp << " head " << i
                      << ": " << r.raw[i] << " vs upstream " << want[i] << " (target " << r.target[i] << ")";
      }
    // Fitted: the exact total N B, never more than 1 from upstream's cap (no head is limited here).
    const auto N = static_cast<int64_t>(flat.size());
    const auto fit = hb::fit_to_total(r.target, r.raw, std::vector<int64_t>(flat.size(), 1 << 20), N * base);
    EXPECT_EQ(sum(fit), N * base);
    for (size_t i = 0; i < fit.size(); ++i) fitted_far += std::abs(fit[i] - want[i]) > 1;
    ++cases;
  }
  EXPECT_GE(cases, 200);
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(fitted_far, 0);
}

TEST(AllocatorReference, AdaKvOriginalCapsEqualUpstream) {
  const auto ref = load_json(test_paths::fixtures() + "/allocators/reference_caps.json");
  const auto layers = load_json(test_paths::fixtures() + "/allocators/adakv_layers.json").at("layers");
  int cases = 0, fit_off = 0, short_raw = 0;
  for (const auto& c : ref.at("adakv_cases")) {
    const auto& layer = layers.at(c.at("layer").get<size_t>());
    std::vector<std::vector<float>> s;
    for (const auto& row : layer.at("scores")) {
      s.emplace_back();
      for (double x : row.get<std::vector<double>>()) s.back().push_back(static_cast<float>(x));
    }
    const int64_t base = c.at("base"), H = layer.at("heads"), L = layer.at("slots");
    const double alpha = c.at("floor_alpha");
    const auto r = hb::adakv_original_caps(s, std::vector<int64_t>(static_cast<size_t>(H), base), alpha, c.at("normalize"));
    EXPECT_EQ(r.counts, c.at("counts").get<std::vector<int64_t>>()) << "layer " << c.at("layer") << " B'=" << base;
    EXPECT_EQ(r.raw, c.at("caps").get<std::vector<int64_t>>()) << "layer " << c.at("layer") << " B'=" << base << " alpha " << alpha;
    const auto fit = hb::fit_to_total(r.target, r.raw, std::vector<int64_t>(static_cast<size_t>(H), L), H * base);
    EXPECT_EQ(sum(fit), H * base);
    short_raw += sum(r.raw) != H * base;
    for (size_t i = 0; i < fit.size(); ++i) fit_off += std::abs(fit[i] - r.raw[i]) > 1;
    ++cases;
  }
  EXPECT_GE(cases, 100);
  EXPECT_EQ(fit_off, 0);
  EXPECT_GT(short_raw, 0);  // upstream's rounded caps do miss the budget on these inputs
}

// --- presses on stories260K -----------------------------------------------------------------------

TEST(AllocatorPress, AdaKvOriginalKeepsTheComputedCapsPerHead) {
  auto model = Model::load(test_paths::stories260k());
  for (const char* opts : {"", ", floor_alpha=0.5", ", normalize=true", ", parity=true"}) {
    const std::string expr = std::string("adakv(snapkv(window_size=8), rule=original") + opts + ")";
    auto press = make_press(expr);
    const Budget budget{0.6};
    const bool parity = std::string(opts).find("parity") != std::string::npos;
    const double alpha = std::string(opts).find("0.5") != std::string::npos ? 0.5 : 0.2;
    const bool normalize = std::string(opts).find("normalize") != std::string::npos;
    run_hooked(*model, press->needs(), [&](const LayerView& v) {
      // Expected counts from the arithmetic on the inner press's scores.
      auto inner = make_press("snapkv(window_size=8)");
      const LayerScores sc = inner->score(v);
      std::vector<std::vector<float>> free(sc.size());
      std::vector<int64_t> base, prot, hi;
      for (size_t h = 0; h < sc.size(); ++h) {
        for (float x : sc[h])
          if (x != INFINITY) free[h].push_back(x);
        prot.push_back(static_cast<int64_t>(sc[h].size() - free[h].size()));
        hi.push_back(static_cast<int64_t>(free[h].size()));
        base.push_back(budget.keep(v.length(static_cast<int64_t>(h))) - prot.back());  // B' = n - window
      }
      const auto r = hb::adakv_original_caps(free, base, alpha, normalize);
      const auto caps = parity ? r.raw : hb::fit_to_total(r.target, r.raw, hi, sum(base));
      const KeepSets keep = press->select(v, budget);
      int64_t kept = 0;
      for (size_t h = 0; h < keep.size(); ++h) {
        EXPECT_EQ(static_cast<int64_t>(keep[h].size()), prot[h] + caps[h]) << expr << " layer " << v.layer << " head " << h;
        kept += static_cast<int64_t>(keep[h].size());
      }
      if (!parity) {
        EXPECT_EQ(kept, v.n_head_kv() * budget.keep(v.length(0))) << expr << " layer " << v.layer;
      }
    });
    // Through the pipeline: really evicted, ragged, bytes follow, decoding goes on.
    Session s(*model, {.threads = 1});
    prefill_with_press(s, prompt(), *press, budget, 0);
    bool ragged = false;
    int64_t total = 0;
    for (int64_t l = 0; l < 5; ++l) {
      int64_t layer = 0;
      for (int64_t h = 0; h < 4; ++h) layer += s.cache().length(l, h), ragged = ragged || s.cache().length(l, h) != s.cache().length(l, 0);
      if (!parity) {
        EXPECT_EQ(layer, 4 * budget.keep(static_cast<int64_t>(prompt().size()))) << expr;
      }
      total += layer;
    }
    EXPECT_TRUE(ragged) << expr;
    EXPECT_LT(total, 5 * 4 * static_cast<int64_t>(prompt().size()));
    EXPECT_EQ(s.cache().bytes_held(), bytes_for(s.cache())) << expr;
    EXPECT_NO_THROW(s.eval({300}));
  }
}

TEST(AllocatorPress, HeadKvAndDiliLazyKvKeepTheirCapsPerKvHead) {
  auto model = Model::load(test_paths::stories260k());
  const std::string file = stories_scores("ok");
  const auto len = static_cast<int64_t>(prompt().size());
  for (const std::string name : {"headkv", "dililazykv"})
    for (const Budget budget : {Budget{0.5}, Budget{0.8}, Budget{0.0, 40}})
      for (const bool parity : {false, true}) {
        const std::string expr = name + "(snapkv(window_size=8), beta=1.2" + (parity ? ", parity=true" : "") + ")";
        auto press = make_press(expr, {"head_scores=" + file});
        Session s(*model, {.threads = 1});
        prefill_with_press(s, prompt(), *press, budget, 0);
        const int64_t n = budget.keep(len), w = 8, base = n - w;
        const auto caps = hb::head_file_caps(*press, *model, base, len - w);
        // The caps against the formula on the file's KV-head scores (G = 2 query heads each).
        const auto f = hb::read_head_scores(file);
        const auto kv = hb::kv_head_scores(f, 5, 8, 4);
        std::vector<double> flat;
        for (const auto& row : kv) flat.insert(flat.end(), row.begin(), row.end());
        const auto r = name == "headkv" ? hb::headkv_caps(flat, base, 1.2, 1.0) : hb::dililazykv_caps(flat, 4, base, 1.2, 1.0);
        const auto want = parity ? r.raw : hb::fit_to_total(r.target, r.raw, std::vector<int64_t>(20, len - w), 20 * base);
        int64_t total = 0;
        bool ragged = false;
        for (int64_t l = 0; l < 5; ++l)
          for (int64_t h = 0; h < 4; ++h) {
            const int64_t cap = caps[static_cast<size_t>(l)][static_cast<size_t>(h)];
            EXPECT_EQ(cap, want[static_cast<size_t>(l * 4 + h)]) << expr;
            EXPECT_EQ(s.cache().length(l, h), w + std::clamp<int64_t>(cap, 0, len - w)) << expr << " layer " << l << " head " << h;
            total += s.cache().length(l, h);
            ragged = ragged || s.cache().length(l, h) != s.cache().length(0, 0);
          }
        if (!parity) {
          EXPECT_EQ(total, 20 * n) << expr;  // exactly the requested total
        }
        EXPECT_TRUE(ragged) << expr;
        EXPECT_EQ(s.cache().bytes_held(), bytes_for(s.cache())) << expr;
        EXPECT_NO_THROW(s.eval({300}));
      }
}

TEST(AllocatorPress, HeadFilePressesCompressWhileDecoding) {
  auto model = Model::load(test_paths::stories260k());
  const std::string file = stories_scores("decode");
  const std::vector<std::pair<std::string, std::vector<std::string>>> presses = {
      {"headkv(knorm)", {"head_scores=" + file}},
      {"dililazykv(knorm)", {"head_scores=" + file}},
      {"adakv(knorm, rule=original)", {}},
      {"global_topk(knorm)", {}}};
  for (const auto& [expr, opts] : presses) {
    auto press = make_press(expr, opts);
    Session s(*model, {.threads = 1});
    const CompressionPolicy policy{.decode_interval = 4, .decode_target = 30};
    PressRunner runner(s, press.get(), Budget{0.5}, press.get(), policy);
    runner.prefill(prompt(), 0);
    runner.start_decoding();
    for (int i = 0; i < 9; ++i) {
      const auto logits = s.eval({static_cast<int32_t>(300 + i)});
      ASSERT_TRUE(std::all_of(logits.begin(), logits.end(), [](float x) { return std::isfinite(x); })) << expr;
    }
    // Compressed at least once to 30 per head on average (per layer or over all layers), then
    // at most 4 more per head.
    int64_t total = 0;
    for (int64_t l = 0; l < 5; ++l)
      for (int64_t h = 0; h < 4; ++h) total += s.cache().length(l, h);
    EXPECT_LE(total, 20 * (30 + 4)) << expr;
    s.cache().release_slack(0);
    EXPECT_EQ(s.cache().bytes_held(), bytes_for(s.cache())) << expr;
  }
}

TEST(AllocatorPress, GlobalTopKEvictsTheLowestScoresOfAllLayers) {
  auto model = Model::load(test_paths::stories260k());
  const auto len = static_cast<int64_t>(prompt().size());
  for (const Budget budget : {Budget{0.5}, Budget{0.0, 50}}) {
    // The scores the inner press gives each layer after the context.
    std::vector<LayerScores> scores(5);
    auto inner = make_press("snapkv(window_size=8)");
    run_hooked(*model, inner->needs(), [&](const LayerView& v) { scores[static_cast<size_t>(v.layer)] = inner->score(v); });
    // Expected: the n_evict lowest unprotected scores of all layers pooled (no ties here).
    std::vector<float> pooled;
    for (const auto& ls : scores)
      for (const auto& hs : ls)
        for (float x : hs)
          if (x != INFINITY) pooled.push_back(x);
    const int64_t total = 5 * 4 * len;
    const int64_t n_evict = budget.tokens >= 0 ? total - budget.tokens * 20 : static_cast<int64_t>(std::trunc(static_cast<double>(total) * budget.ratio));
    std::nth_element(pooled.begin(), pooled.begin() + n_evict - 1, pooled.end());
    const float threshold = pooled[static_cast<size_t>(n_evict - 1)];  // the highest evicted score
    auto press = make_press("global_topk(snapkv(window_size=8))");
    Session s(*model, {.threads = 1, .kv_type_k = KvType::F32, .kv_type_v = KvType::F32});
    prefill_with_press(s, prompt(), *press, budget, 0);
    int64_t kept = 0;
    std::vector<int64_t> per_layer(5, 0);
    for (int64_t l = 0; l < 5; ++l)
      for (int64_t h = 0; h < 4; ++h) {
        const auto& hs = scores[static_cast<size_t>(l)][static_cast<size_t>(h)];
        const int64_t want = std::count_if(hs.begin(), hs.end(), [&](float x) { return x > threshold; });
        EXPECT_EQ(s.cache().length(l, h), want) << "layer " << l << " head " << h;
        kept += s.cache().length(l, h);
        per_layer[static_cast<size_t>(l)] += s.cache().length(l, h);
      }
    EXPECT_EQ(kept, total - n_evict);
    EXPECT_NE(*std::min_element(per_layer.begin(), per_layer.end()), *std::max_element(per_layer.begin(), per_layer.end()));
    EXPECT_EQ(s.cache().bytes_held(), bytes_for(s.cache()));
    EXPECT_NO_THROW(s.eval({300}));
  }
}

TEST(AllocatorPress, PyramidKvEvictsPerLayer) {
  auto model = Model::load(test_paths::stories260k());
  auto press = make_press("pyramidkv(window_size=8, beta=4)");
  Session s(*model, {.threads = 1});
  prefill_with_press(s, prompt(), *press, Budget{0.5}, 0);
  const auto len = static_cast<int64_t>(prompt().size());
  std::vector<int64_t> lens;
  for (int64_t l = 0; l < 5; ++l) {
    const int64_t want = pyramidkv_layer_budget(len, 0.5, 8, 4, l, 5);
    for (int64_t h = 0; h < 4; ++h) EXPECT_EQ(s.cache().length(l, h), want) << "layer " << l;
    lens.push_back(want);
  }
  EXPECT_GT(lens.front(), lens.back());  // a real pyramid
  EXPECT_EQ(s.cache().bytes_held(), bytes_for(s.cache()));
}

TEST(AllocatorPress, PerLayerReadsRatiosFromAFile) {
  auto model = Model::load(test_paths::stories260k());
  const auto len = static_cast<int64_t>(prompt().size());
  const double ratios[] = {0, 0.25, 0.5, 0.75, 0.5};
  for (const auto& j : {nlohmann::json(std::vector<double>(ratios, ratios + 5)), nlohmann::json{{"ratios", std::vector<double>(ratios, ratios + 5)}}}) {
    const std::string path = test_head_scores::write_json("ratios", j);
    Session s(*model, {.threads = 1});
    auto press = make_press("per_layer(knorm)", {"ratios_file=" + path});
    prefill_with_press(s, prompt(), *press, Budget{}, 0);
    for (int64_t l = 0; l < 5; ++l) EXPECT_EQ(s.cache().length(l, 0), Budget{ratios[l]}.keep(len)) << l;
  }
  auto one_line_error = [](const std::function<void()>& f, const std::string& part) {
    try {
      f();
      ADD_FAILURE() << "no error, expected '" << part << "'";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(part), std::string::npos) << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    }
  };
  one_line_error([] { make_press("per_layer(knorm)", {"ratios_file=/nonexistent/ratios.json"}); }, "cannot be read");
  const std::string bad = test_paths::scratch_dir() + "/bad-ratios" + test_paths::process_tag() + ".json";
  std::ofstream(bad) << "[0.1, 0.2,";
  one_line_error([&] { make_press("per_layer(knorm)", {"ratios_file=" + bad}); }, "not valid JSON");
  one_line_error([] { make_press("per_layer(knorm)", {"ratios_file=" + test_head_scores::write_json("r1", {{"x", 1}})}); }, "list of ratios");
  one_line_error([] { make_press("per_layer(knorm)", {"ratios_file=" + test_head_scores::write_json("r2", {0.1, 1.5})}); }, "not in [0, 1)");
  one_line_error([] { make_press("per_layer(knorm)", {"ratios_file=" + test_head_scores::write_json("r3", {0.1, "a"})}); }, "not a number");
  one_line_error([] { make_press("per_layer(knorm, ratios=0.1:0.2)", {"ratios_file=" + test_head_scores::write_json("r4", {0.1})}); }, "not both");
  // The wrong number of layers is caught at compression.
  Session s(*model, SessionOptions{});
  auto press = make_press("per_layer(knorm)", {"ratios_file=" + test_head_scores::write_json("r5", {0.1, 0.2})});
  one_line_error([&] { prefill_with_press(s, prompt(), *press, Budget{}, 0); }, "2 ratios for a model of 5 layers");
}

TEST(AllocatorPress, BadHeadScoreFilesAreOneLineErrors) {
  auto model = Model::load(test_paths::stories260k());
  auto expect_error = [&](const std::string& file, const std::string& part, bool at_compression) {
    for (const std::string name : {"headkv", "dililazykv"}) {
      try {
        auto press = make_press(name + "(snapkv(window_size=8))", {"head_scores=" + file});
        if (at_compression) {
          Session s(*model, SessionOptions{});
          prefill_with_press(s, prompt(), *press, Budget{0.5}, 0);
        }
        ADD_FAILURE() << name << " accepted " << file << ", expected '" << part << "'";
      } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(part), std::string::npos) << what;
        EXPECT_EQ(what.find('\n'), std::string::npos) << what;
      }
    }
  };
  // No file given, a missing file, malformed JSON, not an object, bad keys and values.
  EXPECT_THROW(make_press("headkv(snapkv)"), Error);
  expect_error("/nonexistent/heads.json", "cannot be read", false);
  const std::string bad = test_paths::scratch_dir() + "/bad-heads" + test_paths::process_tag() + ".json";
  std::ofstream(bad) << "{\"0-0\": [0.1, ";
  expect_error(bad, "not valid JSON", false);
  expect_error(test_head_scores::write_json("list", {1, 2}), "JSON object", false);
  expect_error(test_head_scores::write_json("key", {{"0_1", 0.5}}), "is not \"layer-head\"", false);
  expect_error(test_head_scores::write_json("val", {{"0-1", "x"}}), "number or a non-empty list", false);
  expect_error(test_head_scores::write_json("neg", {{"0-1", {0.1, -2}}}), "finite and >= 0", false);
  expect_error(test_head_scores::write_json("empty", {{"_meta", {{"model", "stories260K"}}}}), "no \"layer-head\"", false);
  // Another model's file, the wrong head counts.
  expect_error(stories_scores("other", "Meta-Llama-3-8B-Instruct"), "made for model 'Meta-Llama-3-8B-Instruct'", true);
  auto j = test_head_scores::make(5, 8, "stories260K");
  j.erase("3-5");
  expect_error(test_head_scores::write_json("missing", j), "lacks key '3-5'", true);
  expect_error(test_head_scores::write("six", 6, 8, "stories260K"), "has key '5-0'", true);
  expect_error(test_head_scores::write("heads", 5, 4, "stories260K"), "lacks key '0-4'", true);
  expect_error(test_head_scores::write("qheads", 5, 16, "stories260K"), "has key '0-8'", true);
  // Accepted: the model named by general.name, by its file name, or by its fingerprint; no _meta
  // (a warning); keys starting with "_" skipped.
  char sha[32];
  std::snprintf(sha, sizeof sha, "%016llx", static_cast<unsigned long long>(model->fingerprint()));
  auto by_sha = test_head_scores::make(5, 8, "");
  by_sha["_meta"] = {{"model", "renamed"}, {"model_sha", sha}};
  by_sha["_comment"] = "skipped";
  for (const std::string& file : {stories_scores("name", "llama"), stories_scores("file", "stories260K.gguf"), stories_scores("none", ""),
                                  test_head_scores::write_json("sha", by_sha)}) {
    auto press = make_press("headkv(snapkv(window_size=8))", {"head_scores=" + file});
    Session s(*model, SessionOptions{});
    EXPECT_NO_THROW(prefill_with_press(s, prompt(), *press, Budget{0.5}, 0)) << file;
  }
}

TEST(AllocatorPress, PressListDocumentsTheNewOptions) {
  std::map<std::string, PressInfo> by_name;
  for (const auto& p : list_presses()) by_name[p.name] = p;
  ASSERT_TRUE(by_name.count("headkv") && by_name.count("dililazykv") && by_name.count("global_topk"));
  auto has = [&](const std::string& press, const std::string& opt) {
    const auto& o = by_name[press].options;
    return std::any_of(o.begin(), o.end(), [&](const PressOption& x) { return x.name == opt && !x.doc.empty(); });
  };
  for (const char* o : {"head_scores", "beta", "temp", "parity"}) EXPECT_TRUE(has("headkv", o) && has("dililazykv", o)) << o;
  for (const char* o : {"rule", "floor_alpha", "normalize", "parity", "alpha_safeguard"}) EXPECT_TRUE(has("adakv", o)) << o;
  EXPECT_TRUE(has("per_layer", "ratios_file"));
  EXPECT_EQ(by_name["headkv"].inner, 1);
  EXPECT_FALSE(by_name["headkv"].notes.empty());
  EXPECT_FALSE(by_name["global_topk"].notes.empty());
}
