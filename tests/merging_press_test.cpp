// merging(PRESS) (kvpress MergingPress on any press): the formula on hand-made tensors, kvpress's
// own MergingPress.merge on random tensors (tests/fixtures/merging/merging.json, written by
// tests/reference/merging/make_merge_fixture.py), and end to end on stories260K around
// scorers, allocators, global presses and composed presses: the same slots, keys and bytes as
// the inner press alone, only kept values change, and exactly as the formula says.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "fixture_models.h"
#include "head_scores_writer.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"
#include "kvsqueeze/session.h"
#include "press/merge_math.h"
#include "test_inputs.h"
#include "test_paths.h"

using namespace kvsqueeze;

namespace {

using test_inputs::floats;

}  // namespace

// --- the formula ----------------------------------------------------------------------------------

TEST(MergingFormula, WeightsTargetsAndThresholdGate) {
  // Kept slots 0 and 1; evicted 2 (most similar to 0) and 3 (similarity 0 with 0, -1 with 1).
  const std::vector<float> keys = {1, 0, 0, 1, 2, 1, 0, -1};
  const std::vector<float> values = {1, 0, 0, 2, 0, 3, 5, 5};
  const std::vector<int32_t> kept = {0, 1};
  const auto m = merge::similarity_merge(keys, 2, values, 2, kept, 0.0, 1.0);
  const double sim = 2.0 / std::sqrt(5.0), w = sim * 3.0 / (3.0 + 1.0 + 1e-6);
  EXPECT_NEAR(m.values[0], 1.0 / (1.0 + w), 1e-6);
  EXPECT_NEAR(m.values[1], 3.0 * w / (1.0 + w), 1e-6);
  EXPECT_EQ(m.values[2], 0.0f);  // slot 1 received nothing (slot 3's weight is max(0, 0) = 0)
  EXPECT_EQ(m.values[3], 2.0f);
  EXPECT_EQ(m.changed, (std::vector<char>{1, 0}));
  // The threshold gate: 0.894 < 0.9 merges nothing.
  const auto none = merge::similarity_merge(keys, 2, values, 2, kept, 0.9, 1.0);
  EXPECT_EQ(none.values, (std::vector<float>{1, 0, 0, 2}));
  EXPECT_EQ(none.changed, (std::vector<char>{0, 0}));
}

TEST(MergingFormula, NormClampAndZeroValues) {
  // A zero key: every similarity 0 (norm clamped, no NaN); a zero value: weight 0.
  const std::vector<float> keys = {1, 0, 0, 0, 1, 0};
  const std::vector<float> values = {1, 1, 4, 4, 0, 0};
  const auto m = merge::similarity_merge(keys, 2, values, 2, std::vector<int32_t>{0}, 0.0, 1.0);
  for (float v : m.values) EXPECT_TRUE(std::isfinite(v));
  EXPECT_EQ(m.values, (std::vector<float>{1, 1}));  // slot 1: sim 0; slot 2: |v| = 0
  EXPECT_EQ(m.changed, (std::vector<char>{0}));
}

TEST(MergingFormula, FractionGateKeepsTheMostSimilar) {
  // One kept slot; evicted slots with similarities 1, 0.8, 0.6, 0.0 (unit keys in 2-D).
  const float c8 = 0.8f, s8 = 0.6f;
  const std::vector<float> keys = {1, 0, 1, 0, c8, s8, s8, c8, 0, 1};
  const std::vector<float> values = {1, 0, 0, 1, 0, 1, 0, 1, 0, 1};
  // q = 0.5 over {0, 0.6, 0.8, 1}: rank 1.5 -> 0.7: slots with 1 and 0.8 merge.
  const auto m = merge::similarity_merge(keys, 2, values, 2, std::vector<int32_t>{0}, 0.0, 0.5);
  double w = 0.0;
  for (double sim : {1.0, 0.8}) w += sim * 1.0 / (1.0 + 1.0 + 1e-6);
  EXPECT_NEAR(m.values[0], 1.0 / (1.0 + w), 1e-6);
  EXPECT_NEAR(m.values[1], w / (1.0 + w), 1e-6);
}

// Values printed by torch 2.15 for torch.tensor([-inf, -inf, 0.2, 0.5, 0.9]).quantile(q):
// -inf below a finite value interpolates to NaN (weight < 0.5) or -inf (weight >= 0.5).
TEST(MergingFormula, QuantileAsTorch) {
  const float ninf = -std::numeric_limits<float>::infinity();
  const std::vector<float> x = {0.9f, ninf, 0.5f, ninf, 0.2f};
  EXPECT_TRUE(std::isnan(merge::torch_quantile(x, 0.0)));
  EXPECT_TRUE(std::isnan(merge::torch_quantile(x, 0.25)));
  EXPECT_TRUE(std::isnan(merge::torch_quantile(x, 0.3)));
  EXPECT_EQ(merge::torch_quantile(x, 0.375), ninf);
  EXPECT_EQ(merge::torch_quantile(x, 0.45), ninf);
  EXPECT_FLOAT_EQ(merge::torch_quantile(x, 0.5), 0.2f);
  EXPECT_FLOAT_EQ(merge::torch_quantile(x, 0.75), 0.5f);
  EXPECT_FLOAT_EQ(merge::torch_quantile(x, 0.9), 0.74f);
  EXPECT_FLOAT_EQ(merge::torch_quantile({0.1f, 0.2f, 0.3f, 0.7f}, 1.0 - 0.75), 0.175f);
}

// --- kvpress's MergingPress.merge -------------------------------------------------------------------

TEST(MergingFixture, MatchesKvpressMerge) {
  const auto fx = fixture_models::load_json(test_paths::fixtures() + "/merging/merging.json");
  double worst = 0.0;
  int cases = 0, merged_rows = 0;
  for (const auto& c : fx.at("cases")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const int64_t H = c.at("H"), L = c.at("L"), D = c.at("D");
    const auto keys = floats(c.at("keys")), values = floats(c.at("values")), want = floats(c.at("out_values"));
    for (int64_t h = 0; h < H; ++h) {
      std::vector<int32_t> kept;  // top-k order, as MergingPress passes it
      for (const auto& i : c.at("indices")[static_cast<size_t>(h)]) kept.push_back(i.get<int32_t>());
      const size_t off = static_cast<size_t>(h * L * D);
      const std::span<const float> k(keys.data() + off, static_cast<size_t>(L * D)), v(values.data() + off, static_cast<size_t>(L * D));
      const auto m = merge::similarity_merge(k, D, v, D, kept, c.at("similarity_threshold"), c.at("merge_fraction"));
      for (size_t j = 0; j < kept.size(); ++j) {
        merged_rows += m.changed[j];
        for (int64_t d = 0; d < D; ++d) {
          const float got = m.values[j * static_cast<size_t>(D) + static_cast<size_t>(d)];
          const float ref = want[off + static_cast<size_t>(kept[j] * D + d)];
          const double dev = std::fabs(got - ref) / std::max(1.0, static_cast<double>(std::fabs(ref)));
          worst = std::max(worst, dev);
          ASSERT_LE(dev, 2e-6) << "head " << h << " slot " << kept[j] << " dim " << d << ": " << got << " vs " << ref;
        }
        if (!m.changed[j]) {  // unchanged rows are the input, bit for bit
          for (int64_t d = 0; d < D; ++d) EXPECT_EQ(want[off + static_cast<size_t>(kept[j] * D + d)], v[static_cast<size_t>(kept[j] * D + d)]);
        }
      }
    }
    ++cases;
  }
  EXPECT_EQ(cases, 14);
  EXPECT_GT(merged_rows, 200);  // the comparison is not vacuous
  std::printf("[ merging  ] %d kvpress cases, %d merged rows, max relative deviation %.3g\n", cases, merged_rows, worst);
}

// --- end to end on stories260K ----------------------------------------------------------------------

namespace {

std::vector<int32_t> prompt() {
  std::vector<int32_t> ids = {1};
  for (int i = 0; i < 150; ++i) ids.push_back(260 + (i * 37) % 170);
  return ids;
}

SessionOptions f32_options() {
  SessionOptions o;
  o.kv_type_k = o.kv_type_v = KvType::F32;
  o.threads = 1;
  o.chunk = 64;
  return o;
}

std::unique_ptr<Session> prefill(const Model& model, const std::string& expr, const std::vector<std::string>& opts, const Budget& b) {
  auto s = std::make_unique<Session>(model, f32_options());
  auto press = make_press(expr, opts);
  prefill_with_press(*s, prompt(), *press, b, 0);
  return s;
}

struct Comparison {
  int64_t changed_rows = 0, rows = 0;
  double worst = 0.0;  // vs the formula applied to the uncompressed cache
};

// `merged` must hold the same slots, keys and bytes as `plain` (the inner press alone); its values
// must be the formula applied to the uncompressed cache `full` (if given) at the kept positions.
Comparison compare(const KvCache& plain, const KvCache& merged, const Session* full, const Model& model, double threshold,
                   double fraction) {
  Comparison out;
  EXPECT_EQ(plain.bytes_held(), merged.bytes_held());
  const auto& sh = plain.shape();
  for (int64_t l = 0; l < sh.n_layer; ++l)
    for (int64_t h = 0; h < sh.n_head_kv; ++h) {
      const int64_t n = plain.length(l, h);
      EXPECT_EQ(merged.length(l, h), n);
      if (merged.length(l, h) != n) continue;
      const auto pp = plain.positions(l, h), pm = merged.positions(l, h);
      EXPECT_TRUE(std::equal(pp.begin(), pp.end(), pm.begin())) << "layer " << l << " head " << h;
      EXPECT_EQ(std::memcmp(plain.k_bytes(l, h), merged.k_bytes(l, h), static_cast<size_t>(n) * plain.k_row_bytes(l, h)), 0)
          << "keys, layer " << l << " head " << h;
      const auto* vp = reinterpret_cast<const float*>(plain.v_bytes(l, h));
      const auto* vm = reinterpret_cast<const float*>(merged.v_bytes(l, h));
      const int64_t dv = sh.head_dim_v;
      for (int64_t j = 0; j < n; ++j) out.changed_rows += std::memcmp(vp + j * dv, vm + j * dv, static_cast<size_t>(dv) * 4) != 0;
      out.rows += n;
      if (!full) continue;
      const LayerStats none;
      const LayerView fv(model, l, full->cache(), none);
      std::vector<int32_t> kept;  // uncompressed slot of each kept position
      const auto fpos = fv.positions(h);
      for (int32_t p : pm) kept.push_back(static_cast<int32_t>(std::lower_bound(fpos.begin(), fpos.end(), p) - fpos.begin()));
      const auto want = merge::similarity_merge(fv.keys(h), sh.head_dim_k, fv.values(h), dv, kept, threshold, fraction);
      for (size_t i = 0; i < want.values.size(); ++i)
        out.worst = std::max(out.worst, static_cast<double>(std::fabs(want.values[i] - vm[i])));
    }
  return out;
}

class MergingEndToEnd : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = Model::load(test_paths::stories260k()).release(); }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  static const Model* model_;
  // The uncompressed cache, evaluated in the same chunks as with `press` (its query window sets them).
  std::unique_ptr<Session> full(const Press& press) const {
    auto s = std::make_unique<Session>(*model_, f32_options());
    s->set_stats_request(press.needs());
    s->eval(prompt());
    s->set_stats_request({});
    return s;
  }
};
const Model* MergingEndToEnd::model_ = nullptr;

}  // namespace

TEST_F(MergingEndToEnd, SameSlotsKeysAndBytesAsTheInnerPressOnlyValuesMove) {
  struct Case {
    std::string inner;
    Budget budget;
    bool formula;  // kept positions map to uncompressed slots (no renumbering)
  };
  for (const Case& c : {Case{"snapkv(window_size=16)", {0.5}, true}, Case{"adakv(snapkv(window_size=16))", {0.5}, true},
                        Case{"global_topk(snapkv(window_size=16))", {0.6}, true}, Case{"composed(snapkv(window_size=16),think)", {0.5}, true},
                        Case{"kvzip(chunk_size=64)", {0.5}, true}, Case{"key_rerotation(knorm)", {0.5}, false},
                        Case{"headkv(snapkv(window_size=16))", {0.5}, true}}) {
    SCOPED_TRACE(c.inner);
    std::vector<std::string> opts;
    if (c.inner.rfind("headkv", 0) == 0) {
      const auto& cfg = model_->config();
      opts.push_back("headkv.head_scores=" + test_head_scores::write("merging", cfg.n_layer, cfg.n_head, cfg.name));
    }
    const auto uncompressed = full(*make_press(c.inner, opts));
    const auto plain = prefill(*model_, c.inner, opts, c.budget);
    const auto merged = prefill(*model_, "merging(" + c.inner + ")", opts, c.budget);
    const Comparison r = compare(plain->cache(), merged->cache(), c.formula ? uncompressed.get() : nullptr, *model_, 0.0, 1.0);
    EXPECT_GT(r.changed_rows, r.rows / 10) << "merging changed almost nothing";
    EXPECT_LE(r.worst, 1e-6);
    std::printf("[ merging  ] %-40s %lld of %lld kept rows merged, max deviation from the formula %.3g\n", c.inner.c_str(),
                static_cast<long long>(r.changed_rows), static_cast<long long>(r.rows), r.worst);
    // The next token decodes on it.
    EXPECT_NO_THROW(merged->eval({300}));
  }
}

TEST_F(MergingEndToEnd, ThresholdOneLeavesValuesAsTheInnerPress) {
  const auto plain = prefill(*model_, "snapkv", {}, {0.5});
  const auto merged = prefill(*model_, "merging(snapkv, similarity_threshold=1.0)", {}, {0.5});
  EXPECT_EQ(compare(plain->cache(), merged->cache(), nullptr, *model_, 1.0, 1.0).changed_rows, 0);
  // The fraction gate end to end.
  const auto uncompressed = full(*make_press("snapkv"));
  const auto part = prefill(*model_, "snapkv", {"merge=similarity", "merging.merge_fraction=0.5", "merging.similarity_threshold=0.1"}, {0.5});
  const Comparison r = compare(plain->cache(), part->cache(), uncompressed.get(), *model_, 0.1, 0.5);
  EXPECT_GT(r.changed_rows, 0);
  EXPECT_LE(r.worst, 1e-6);
}

TEST_F(MergingEndToEnd, F16CacheKeepsTheInnerPressSlotsAndBytes) {
  SessionOptions o = f32_options();
  o.kv_type_k = o.kv_type_v = KvType::F16;
  Session a(*model_, o), b(*model_, o);
  auto snap = make_press("snapkv"), merging = make_press("merging(snapkv)");
  prefill_with_press(a, prompt(), *snap, {0.5}, 0);
  prefill_with_press(b, prompt(), *merging, {0.5}, 0);
  EXPECT_EQ(a.cache().bytes_held(), b.cache().bytes_held());
  EXPECT_EQ(a.cache().lengths(), b.cache().lengths());
  EXPECT_NE(a.eval({300}), b.eval({300}));  // merged values change what the next token sees
}

// --- the merge=... option ----------------------------------------------------------------------------

TEST(MergingOption, MergeWrapsTheWholeExpression) {
  auto p = make_press("adakv(snapkv)", {"merge=similarity", "merging.similarity_threshold=0.2", "alpha_safeguard=0.3"});
  EXPECT_EQ(p->name(), "merging");
  ASSERT_EQ(p->inner_presses().size(), 1u);
  EXPECT_EQ(p->inner_presses()[0]->name(), "adakv");  // KEY=V without a name still reaches adakv
  EXPECT_EQ(make_press("snapkv", {"merge=cam", "cam.merge_budget=16"})->name(), "cam");
  EXPECT_EQ(merge_option_press({"merge=cam"}), "cam");
  EXPECT_EQ(merge_option_press({"budget=4"}), "");
  try {
    make_press("snapkv", {"merge=pool"});
    ADD_FAILURE() << "merge=pool accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("similarity, cam"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_press("snapkv", {"merging.similarity_threshold=0.2"}), Error);  // no merging without merge=
  EXPECT_THROW(make_press("snapkv", {"merge=similarity", "merging.similarity_threshold=2"}), Error);
  EXPECT_THROW(make_press("merging(snapkv, merge_fraction=0)"), Error);
}

TEST(MergingOption, InsideAnotherWrapperIsAClearError) {
  auto model = Model::load(test_paths::stories260k());
  Session s(*model, f32_options());
  auto p = make_press("adakv(merging(snapkv))");
  try {
    prefill_with_press(s, prompt(), *p, {0.5}, 0);
    ADD_FAILURE() << "adakv(merging(snapkv)) compressed without merging";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outermost"), std::string::npos) << e.what();
  }
}
