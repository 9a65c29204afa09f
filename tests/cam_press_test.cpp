// cam(PRESS) (kvpress CAMPress on any press): windows, probabilities and draws on hand-made
// tensors; kvpress's own CAMPress.compress on random tensors (tests/fixtures/merging/cam.json,
// written by tests/reference/merging/make_merge_fixture.py: exact 0/1 probabilities, and
// random ones with the Bernoulli mask upstream drew); and on stories260K as a decoding-time
// press (--decode-interval 16 --decode-target 64 over 150 tokens), deterministic for a seed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "cli_runner.h"
#include "fixture_models.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"
#include "kvsqueeze/press_pipeline.h"
#include "kvsqueeze/session.h"
#include "press/merge_math.h"
#include "test_inputs.h"
#include "test_paths.h"

using namespace kvsqueeze;

namespace {

using test_inputs::floats;

}  // namespace

// --- the formula ----------------------------------------------------------------------------------

TEST(CamFormula, WindowsProbabilitiesAndTheEndOfTheRun) {
  // Slots 0..7 (one value channel), kept 0 2 4 6; candidates 1 (window 2 4), 5 (window 6 only:
  // the end of the run), 7 (no kept slot after it: nothing, whatever its probability).
  const std::vector<float> v = {10, 1, 20, 0, 40, 2, 60, 3};
  const std::vector<int32_t> kept = {0, 2, 4, 6}, cands = {1, 5, 7};
  const std::vector<float> abar = {1, 5, 1, 0, 1, 0, 4, 9};
  std::vector<float> prob;
  const auto m = merge::cam_merge(v, 1, kept, cands, abar, 2, std::vector<double>{0.999, 0.0, 0.0}, &prob);
  // p1 = clamp(5 / 1) = 1; p5 = 0 / 4 = 0; p7 = 9 / (0 / 1) = inf -> 1.
  EXPECT_EQ(prob, (std::vector<float>{1, 0, 1}));
  EXPECT_EQ(m.values, (std::vector<float>{10, 20.5f, 40.5f, 60}));
  EXPECT_EQ(m.changed, (std::vector<char>{0, 1, 1, 0}));
  // 0 / 0 (NaN) -> 0; a strict probability merges when the draw is below it.
  const std::vector<float> zero(8, 0.0f);
  merge::cam_merge(v, 1, kept, std::vector<int32_t>{7}, zero, 2, std::vector<double>{0.0}, &prob);
  EXPECT_EQ(prob, (std::vector<float>{0}));
  const std::vector<float> half = {1, 0.5f, 1, 0, 1, 0, 1, 0};
  const auto yes = merge::cam_merge(v, 1, kept, std::vector<int32_t>{1}, half, 3, std::vector<double>{0.49}, &prob);
  EXPECT_EQ(prob, (std::vector<float>{0.5f}));
  EXPECT_EQ(yes.values, (std::vector<float>{10, 20 + 1.0f / 3, 40 + 1.0f / 3, 60 + 1.0f / 3}));
  const auto no = merge::cam_merge(v, 1, kept, std::vector<int32_t>{1}, half, 3, std::vector<double>{0.5});
  EXPECT_EQ(no.changed, (std::vector<char>{0, 0, 0, 0}));
}

TEST(CamFormula, CandidatesAreTheBestEvictedTiesToLaterSlots) {
  const std::vector<float> scores = {9, 1, 3, 9, 3, 2, 3, 0};
  const std::vector<int32_t> evicted = {1, 2, 4, 5, 6, 7};
  EXPECT_EQ(merge::best_evicted(scores, evicted, 2), (std::vector<int32_t>{4, 6}));  // three 3s: the later two
  EXPECT_EQ(merge::best_evicted(scores, evicted, 4), (std::vector<int32_t>{2, 4, 5, 6}));
  EXPECT_EQ(merge::best_evicted(scores, evicted, 10), evicted);
  EXPECT_EQ(merge::best_evicted({}, evicted, 2), (std::vector<int32_t>{6, 7}));  // no scores: the latest
  EXPECT_TRUE(merge::best_evicted(scores, evicted, 0).empty());
  EXPECT_EQ(merge::complement(std::vector<int32_t>{0, 3}, 5), (std::vector<int32_t>{1, 2, 4}));
}

TEST(CamFormula, DrawsAreSeededAndPortable) {
  merge::CamRng a(7, 3, 1, 2), b(7, 3, 1, 2), c(7, 3, 1, 3), d(8, 3, 1, 2);
  std::vector<double> xa, xb, xc, xd;
  for (int i = 0; i < 64; ++i) xa.push_back(a.uniform()), xb.push_back(b.uniform()), xc.push_back(c.uniform()), xd.push_back(d.uniform());
  EXPECT_EQ(xa, xb);
  EXPECT_NE(xa, xc);
  EXPECT_NE(xa, xd);
  for (double x : xa) EXPECT_TRUE(x >= 0.0 && x < 1.0);
  // mt19937_64 and seed_seq are fully specified by the standard: the same numbers everywhere.
  std::seed_seq key{7u, 0u, 3u, 1u, 2u};
  std::mt19937_64 g(key);
  EXPECT_EQ(xa[0], static_cast<double>(g() >> 11) * 0x1.0p-53);
}

// --- kvpress's CAMPress.compress -------------------------------------------------------------------

namespace {

// A press returning fixed scores (the fixture's base press).
class GivenScores : public Press {
 public:
  explicit GivenScores(LayerScores s) : s_(std::move(s)) {}
  std::string name() const override { return "given"; }
  LayerScores score(const LayerView&) override { return s_; }

 private:
  LayerScores s_;
};

struct CamCase {
  int64_t H, L, D, target, budget, k;
  std::string name, mode;
  std::vector<float> keys, values, scores, attn, out_keys, out_values;
  std::vector<std::vector<float>> prob;
  std::vector<std::vector<int>> mask;
  explicit CamCase(const nlohmann::json& c)
      : H(c.at("H")), L(c.at("L")), D(c.at("D")), target(c.at("target_size")), budget(c.at("merge_budget")), k(c.at("k")),
        name(c.at("name")), mode(c.at("mode")), keys(floats(c.at("keys"))), values(floats(c.at("values"))), scores(floats(c.at("scores"))),
        attn(floats(c.at("attentions"))), out_keys(floats(c.at("out_keys"))), out_values(floats(c.at("out_values"))) {
    for (const auto& r : c.at("prob")) prob.push_back(floats(r));
    for (const auto& r : c.at("mask")) mask.push_back(r.get<std::vector<int>>());
  }
  LayerScores layer_scores() const {
    LayerScores s(static_cast<size_t>(H));
    for (int64_t h = 0; h < H; ++h) s[static_cast<size_t>(h)].assign(scores.begin() + h * L, scores.begin() + (h + 1) * L);
    return s;
  }
  // The kept slot j of head h in the reference output must be input slot kept[j] (keys unchanged).
  void expect_kept(const std::vector<int32_t>& kept) const {
    ASSERT_EQ(static_cast<int64_t>(kept.size()), target);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < target; ++j)
        for (int64_t d = 0; d < D; ++d)
          ASSERT_EQ(out_keys[static_cast<size_t>((h * target + j) * D + d)], keys[static_cast<size_t>((h * L + kept[static_cast<size_t>(j)]) * D + d)])
              << "head " << h << " kept " << j;
  }
};

double relative(float got, float ref) { return std::fabs(got - ref) / std::max(1.0, static_cast<double>(std::fabs(ref))); }

}  // namespace

TEST(CamFixture, MatchesKvpressCompress) {
  const auto fx = fixture_models::load_json(test_paths::fixtures() + "/merging/cam.json");
  double worst_value = 0.0, worst_prob = 0.0;
  int cases = 0, merges = 0;
  for (const auto& j : fx.at("cases")) {
    const CamCase c(j);
    SCOPED_TRACE(c.name);
    // kvpress's rule: scores averaged over heads, the same slots evicted from every head.
    const LayerScores s = c.layer_scores();
    std::vector<float> mean(static_cast<size_t>(c.L), 0.0f);
    for (const auto& row : s)
      for (size_t i = 0; i < row.size(); ++i) mean[i] += row[i];
    for (auto& x : mean) x /= static_cast<float>(c.H);
    const std::vector<int32_t> kept = top_k_per_head({mean}, {c.target})[0];
    c.expect_kept(kept);
    const auto cands = merge::best_evicted(mean, merge::complement(kept, c.L), c.k);
    for (int64_t h = 0; h < c.H; ++h) {
      ASSERT_EQ(cands.size(), c.prob[static_cast<size_t>(h)].size());
      // Exact cases: every probability is 0 or 1, so any draw gives upstream's mask. Random ones:
      // upstream's mask (draw 0 where it merged, 1 where it did not).
      std::vector<double> u(cands.size(), 0.5);
      if (c.mode == "random")
        for (size_t i = 0; i < u.size(); ++i) u[i] = c.mask[static_cast<size_t>(h)][i] ? 0.0 : 1.0;
      std::vector<float> prob;
      const size_t off = static_cast<size_t>(h * c.L * c.D);
      const std::span<const float> v(c.values.data() + off, static_cast<size_t>(c.L * c.D)), a(c.attn.data() + h * c.L, static_cast<size_t>(c.L));
      const auto m = merge::cam_merge(v, c.D, kept, cands, a, c.budget, u, &prob);
      for (size_t i = 0; i < prob.size(); ++i) {
        const float ref = c.prob[static_cast<size_t>(h)][i];
        if (c.mode == "exact") {
          ASSERT_EQ(prob[i], ref) << "head " << h << " candidate " << cands[i];
        }
        worst_prob = std::max(worst_prob, relative(prob[i], ref));
        ASSERT_LE(relative(prob[i], ref), 1e-5) << "head " << h << " candidate " << cands[i];
        merges += c.mask[static_cast<size_t>(h)][i];
      }
      for (int64_t jj = 0; jj < c.target; ++jj)
        for (int64_t d = 0; d < c.D; ++d) {
          const float got = m.values[static_cast<size_t>(jj * c.D + d)], ref = c.out_values[static_cast<size_t>((h * c.target + jj) * c.D + d)];
          worst_value = std::max(worst_value, relative(got, ref));
          ASSERT_LE(relative(got, ref), 1e-5) << "head " << h << " kept " << jj << " dim " << d;
        }
    }
    ++cases;
  }
  EXPECT_EQ(cases, 7);
  EXPECT_GT(merges, 50);
  std::printf("[ cam      ] %d kvpress cases, %d merges, max relative deviation: values %.3g, probabilities %.3g\n", cases, merges,
              worst_value, worst_prob);
}

// The same cases through the real wrapper (cam(parity=true) around a fixed scorer), on a cache
// of stories260K's head size: Abar arrives as attention column sums, k as the tokens observed.
TEST(CamFixture, TheWrapperWithParityMatchesKvpress) {
  auto model = Model::load(test_paths::stories260k());
  const auto& cfg = model->config();
  const auto fx = fixture_models::load_json(test_paths::fixtures() + "/merging/cam.json");
  int ran = 0;
  for (const auto& j : fx.at("cases")) {
    const CamCase c(j);
    if (c.mode != "exact" || c.D != cfg.head_dim_k || cfg.n_head % c.H != 0) continue;
    SCOPED_TRACE(c.name);
    auto press = merge::make_cam_press(std::make_unique<GivenScores>(c.layer_scores()), c.budget, 0, true);
    KvCacheShape shape{cfg.n_layer, c.H, c.D, c.D, KvType::F32, KvType::F32, false, false, false, std::vector<int32_t>(static_cast<size_t>(cfg.n_layer), 0)};
    KvCache cache(shape, c.L);
    std::vector<float> k(static_cast<size_t>(c.L * c.H * c.D)), v(k.size());
    std::vector<int32_t> pos(static_cast<size_t>(c.L));
    for (int64_t t = 0; t < c.L; ++t) {
      pos[static_cast<size_t>(t)] = static_cast<int32_t>(t);
      for (int64_t h = 0; h < c.H; ++h)
        for (int64_t d = 0; d < c.D; ++d) {
          k[static_cast<size_t>((t * c.H + h) * c.D + d)] = c.keys[static_cast<size_t>((h * c.L + t) * c.D + d)];
          v[static_cast<size_t>((t * c.H + h) * c.D + d)] = c.values[static_cast<size_t>((h * c.L + t) * c.D + d)];
        }
    }
    cache.append(0, c.L, k.data(), v.data(), pos.data());
    LayerStats st;
    st.layer = 0;
    for (int64_t t = 0; t < c.k; ++t) st.positions.push_back(static_cast<int32_t>(t));  // k tokens observed
    const int64_t group = cfg.n_head / c.H;
    for (int64_t q = 0; q < cfg.n_head; ++q)
      st.attention.column_sums.emplace_back(c.attn.begin() + (q / group) * c.L, c.attn.begin() + (q / group + 1) * c.L);
    const LayerView view(*model, 0, cache, st);
    press->observe(view);
    const KeepSets keep = press->compress(view, Budget{0.0, c.target}, cache);
    c.expect_kept(keep[0]);
    for (int64_t h = 0; h < c.H; ++h) {
      ASSERT_EQ(cache.length(0, h), c.target);
      const auto* got = reinterpret_cast<const float*>(cache.v_bytes(0, h));
      for (int64_t i = 0; i < c.target * c.D; ++i)
        ASSERT_LE(relative(got[i], c.out_values[static_cast<size_t>(h * c.target * c.D + i)]), 1e-5) << "head " << h << " element " << i;
    }
    ++ran;
  }
  EXPECT_EQ(ran, 2);
}

// --- on stories260K, while decoding -------------------------------------------------------------------

namespace {

std::vector<int32_t> context_ids() {
  std::vector<int32_t> ids = {1};
  for (int i = 0; i < 100; ++i) ids.push_back(260 + (i * 37) % 170);
  return ids;
}

// Prefill at ratio 0.5, then 150 teacher-forced tokens, compressing every 16 steps to 64 slots.
std::unique_ptr<Session> decode_run(const Model& model, Press& press, std::vector<std::vector<float>>* logits = nullptr) {
  const SessionOptions o{.threads = 1, .kv_type_k = KvType::F32, .kv_type_v = KvType::F32};
  auto s = std::make_unique<Session>(model, o);
  const CompressionPolicy policy{.decode_interval = 16, .decode_target = 64};
  PressRunner runner(*s, &press, Budget{0.5}, &press, policy);
  runner.prefill(context_ids(), 200);
  runner.start_decoding();
  for (int i = 0; i < 150; ++i) {
    const auto l = s->eval({static_cast<int32_t>(50 + (i * 53) % 400)});
    if (logits) logits->push_back(l);
  }
  return s;
}

bool same_values(const KvCache& a, const KvCache& b) {
  for (int64_t l = 0; l < a.shape().n_layer; ++l)
    for (int64_t h = 0; h < a.shape().n_head_kv; ++h)
      if (a.length(l, h) != b.length(l, h) ||
          std::memcmp(a.v_bytes(l, h), b.v_bytes(l, h), static_cast<size_t>(a.length(l, h)) * a.v_row_bytes()) != 0)
        return false;
  return true;
}

}  // namespace

TEST(CamDecoding, MergesWhileDecodingDeterministicallyForASeed) {
  auto model = Model::load(test_paths::stories260k());
  auto snap = make_press("snapkv(window_size=8)");
  auto cam_a = make_press("snapkv(window_size=8)", {"merge=cam", "cam.merge_budget=16"});
  auto cam_b = make_press("cam(snapkv(window_size=8), merge_budget=16)");
  auto cam_seed = make_press("cam(snapkv(window_size=8), merge_budget=16, seed=5)");
  std::vector<std::vector<float>> la, lb;
  const auto plain = decode_run(*model, *snap);
  const auto a = decode_run(*model, *cam_a, &la);
  const auto b = decode_run(*model, *cam_b, &lb);
  const auto c = decode_run(*model, *cam_seed);
  EXPECT_EQ(la, lb);
  EXPECT_TRUE(same_values(a->cache(), b->cache()));
  EXPECT_FALSE(same_values(a->cache(), c->cache())) << "another seed drew the same merges";
  EXPECT_FALSE(same_values(a->cache(), plain->cache())) << "cam merged nothing";
  // Layer 0's keys and its snapkv selection depend on the tokens only: cam keeps snapkv's slots there.
  for (int64_t h = 0; h < a->cache().shape().n_head_kv; ++h) {
    const auto pa = a->cache().positions(0, h), pp = plain->cache().positions(0, h);
    ASSERT_EQ(pa.size(), pp.size());
    EXPECT_TRUE(std::equal(pa.begin(), pa.end(), pp.begin())) << "head " << h;
  }
  EXPECT_EQ(a->cache().bytes_held(), plain->cache().bytes_held());
  for (const auto& layer : a->cache().lengths())
    for (int64_t len : layer) EXPECT_LE(len, 64 + 16);
  // The press's state restarts with a new sequence: reusing it gives the same run.
  std::vector<std::vector<float>> again;
  const auto a2 = decode_run(*model, *cam_a, &again);
  EXPECT_EQ(again, la);
  EXPECT_TRUE(same_values(a->cache(), a2->cache()));
}

TEST(CamDecoding, ParityEvictsTheSameSlotsFromEveryHead) {
  auto model = Model::load(test_paths::stories260k());
  auto press = make_press("cam(snapkv(window_size=8), parity=true)");
  const auto s = decode_run(*model, *press);
  const auto& cache = s->cache();
  for (int64_t l = 0; l < cache.shape().n_layer; ++l)
    for (int64_t h = 1; h < cache.shape().n_head_kv; ++h) {
      const auto p0 = cache.positions(l, 0), ph = cache.positions(l, h);
      ASSERT_EQ(p0.size(), ph.size()) << "layer " << l;
      EXPECT_TRUE(std::equal(p0.begin(), p0.end(), ph.begin())) << "layer " << l << " head " << h;
    }
}

TEST(CamDecoding, ParityRefusesRaggedHeadsClearly) {
  auto model = Model::load(test_paths::stories260k());
  // adakv leaves the heads with different lengths after the prefill; cam(parity) then decodes.
  auto ada = make_press("adakv(snapkv(window_size=8))");
  auto cam = make_press("cam(knorm, parity=true)");
  Session s(*model, {.threads = 1});
  const CompressionPolicy policy{.decode_interval = 16, .decode_target = 64};
  PressRunner runner(s, ada.get(), Budget{0.5}, cam.get(), policy);
  runner.prefill(context_ids(), 64);
  runner.start_decoding();
  try {
    for (int i = 0; i < 20; ++i) s.eval({300});
    ADD_FAILURE() << "cam(parity=true) compressed heads of different lengths";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("different lengths"), std::string::npos) << e.what();
  }
}

TEST(CamDecoding, AroundAllocatorsAndGlobalPresses) {
  auto model = Model::load(test_paths::stories260k());
  for (const char* expr : {"cam(adakv(snapkv(window_size=8)))", "cam(global_topk(snapkv(window_size=8)))",
                           "cam(composed(snapkv(window_size=8),think))", "cam(knorm)", "cam(adakv(snapkv(window_size=8)), parity=true)"}) {
    SCOPED_TRACE(expr);
    auto press = make_press(expr);
    std::vector<std::vector<float>> logits;
    EXPECT_NO_THROW(decode_run(*model, *press, &logits));
    for (const auto& l : logits)
      for (float x : l) ASSERT_TRUE(std::isfinite(x));
  }
  // kvzip decides in its final pass over the context (it cannot compress while decoding): cam
  // merges there, the candidates being every evicted slot (the whole context is new).
  auto plain = make_press("kvzip(chunk_size=64)"), cam = make_press("cam(kvzip(chunk_size=64))");
  const SessionOptions o{.threads = 1, .kv_type_k = KvType::F32, .kv_type_v = KvType::F32};
  Session a(*model, o), b(*model, o);
  prefill_with_press(a, context_ids(), *plain, Budget{0.5}, 0);
  prefill_with_press(b, context_ids(), *cam, Budget{0.5}, 0);
  EXPECT_EQ(a.cache().lengths(), b.cache().lengths());
  EXPECT_FALSE(same_values(a.cache(), b.cache()));
}

TEST(CamDecoding, GenerateWithMergeCamIsDeterministic) {
  const std::string cmd = "generate -m " + test_paths::stories260k() +
                          " -p 'Once upon a time there was a little girl named Lily. She loved to play outside with her dog.' -n 150 -t 1"
                          " --press snapkv --ratio 0.5 --press-opt merge=cam --press-opt cam.merge_budget=8 --press-opt window_size=8"
                          " --decode-interval 16 --decode-target 64 --json";
  const CliResult a = run_cli(cmd), b = run_cli(cmd);
  ASSERT_EQ(a.status, 0) << a.err;
  ASSERT_EQ(b.status, 0) << b.err;
  const auto ja = nlohmann::json::parse(a.out), jb = nlohmann::json::parse(b.out);
  EXPECT_EQ(ja.at("output_tokens"), jb.at("output_tokens"));
  EXPECT_EQ(ja.at("kv_lengths"), jb.at("kv_lengths"));
  EXPECT_GT(ja.at("compression").at("layer_compressions").get<int64_t>(), 5);
  const CliResult bad = run_cli("generate -m " + test_paths::stories260k() + " -p 'Once' -n 2 -t 1 --press snapkv --ratio 0.5 --press-opt merge=pool");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("similarity, cam"), std::string::npos) << bad.err;
}
