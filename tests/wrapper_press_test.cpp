// Wrapper presses on stories260K: adakv's real eviction and the memory it frees, critical and
// critical_adakv against their formulas, composed against the presses run by hand, and the
// errors of wrappers given presses they cannot wrap.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

#include "kernels/matmul.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"
#include "kvsqueeze/session.h"
#include "model/model_weights.h"
#include "test_paths.h"

using namespace kvsqueeze;

namespace {

std::vector<int32_t> prompt() {
  std::vector<int32_t> ids = {1};
  for (int i = 0; i < 150; ++i) ids.push_back(260 + (i * 37) % 170);
  return ids;
}

// Runs `hook` on every layer after its attention (on an f32 cache), then nothing else.
std::unique_ptr<Session> run(const Model& model, const StatsRequest& req, const std::function<void(const LayerView&, KvCache&)>& hook) {
  const SessionOptions o{.threads = 1, .kv_type_k = KvType::F32, .kv_type_v = KvType::F32};
  auto s = std::make_unique<Session>(model, o);
  s->set_stats_request(req);
  s->set_layer_hook([&](const LayerStats& st, KvCache& cache) { hook(LayerView(model, st.layer, cache, st), cache); });
  s->eval(prompt());
  s->set_layer_hook(nullptr);
  return s;
}

}  // namespace

TEST(WrapperPress, AdaKvEvictsPerHeadAndFreesTheMemory) {
  auto model = Model::load(test_paths::stories260k());
  for (const char* inner : {"snapkv", "knorm", "keydiff", "tova"}) {
    auto press = make_press(std::string("adakv(") + inner + ")");
    Session s(*model, {.threads = 1, .kv_type_k = KvType::F16, .kv_type_v = KvType::F16});
    prefill_with_press(s, prompt(), *press, Budget{0.5}, 0);
    const auto& cache = s.cache();
    const auto len = static_cast<int64_t>(prompt().size());
    bool ragged = false;
    int64_t slots = 0;
    for (int64_t l = 0; l < cache.shape().n_layer; ++l) {
      int64_t layer_total = 0;
      for (int64_t h = 0; h < cache.shape().n_head_kv; ++h) {
        layer_total += cache.length(l, h);
        ragged = ragged || cache.length(l, h) != cache.length(l, 0);
        const auto p = cache.positions(l, h);
        EXPECT_TRUE(std::is_sorted(p.begin(), p.end()));
      }
      // The layer's budget, pooled: sum over heads of floor(len (1 - cr)) (protected windows may exceed it).
      if (std::string(inner) != "snapkv") {
        EXPECT_EQ(layer_total, cache.shape().n_head_kv * Budget{0.5}.keep(len)) << inner << " layer " << l;
      }
      slots += layer_total;
    }
    if (std::string(inner) != "tova") {  // TOVA gives every head the same scores
      EXPECT_TRUE(ragged) << inner << ": every head kept the same count";
    }
    EXPECT_EQ(cache.bytes_held(), static_cast<size_t>(slots) * (cache.k_row_bytes() + cache.v_row_bytes() + 4)) << inner;
    // The next token decodes on the ragged cache.
    EXPECT_NO_THROW(s.eval({300}));
  }
}

// Per slot, mean over the group of ||v W_o[q]||_1, computed here from the dequantized rows.
std::vector<std::vector<double>> naive_norms(const LayerView& v) {
  const auto& wo = v.model.weights().layers[static_cast<size_t>(v.layer)].wo;
  const int64_t dv = v.head_dim_v(), g = v.group();
  std::vector<float> row(static_cast<size_t>(wo.cols));
  std::vector<std::vector<double>> out(static_cast<size_t>(v.n_head_kv()));
  for (int64_t h = 0; h < v.n_head_kv(); ++h) {
    const auto vals = v.values(h);
    out[static_cast<size_t>(h)].assign(static_cast<size_t>(v.length(h)), 0.0);
    for (int64_t r = 0; r < wo.rows; ++r) {
      kernels::get_row(wo, r, row.data());
      for (int64_t i = 0; i < v.length(h); ++i)
        for (int64_t q = h * g; q < (h + 1) * g; ++q) {
          double dot = 0;
          for (int64_t j = 0; j < dv; ++j) dot += static_cast<double>(vals[static_cast<size_t>(i * dv + j)]) * row[static_cast<size_t>(q * dv + j)];
          out[static_cast<size_t>(h)][static_cast<size_t>(i)] += std::fabs(dot) / static_cast<double>(g);
        }
    }
  }
  return out;
}

TEST(WrapperPress, CriticalMatchesItsFormula) {
  auto model = Model::load(test_paths::stories260k());
  const double ratio = 0.5;
  for (const char* inner : {"knorm", "snapkv"}) {
    auto press = make_press(std::string("critical(") + inner + ")");
    auto base = make_press(inner);
    int checked = 0;
    run(*model, press->needs(), [&](const LayerView& v, KvCache&) {
      if (!v.stats.last_chunk) return;
      const LayerScores s = base->score(v);
      const auto norms = naive_norms(v);
      const KeepSets got = press->select(v, Budget{ratio});
      const LayerScores second = press->score(v);
      for (int64_t h = 0; h < v.n_head_kv(); ++h) {
        const auto len = v.length(h);
        const auto& sh = s[static_cast<size_t>(h)];
        for (int64_t i = 0; i < len; ++i)
          if (std::isfinite(sh[static_cast<size_t>(i)])) {
            const double want = (sh[static_cast<size_t>(i)] + 1e-4) * norms[static_cast<size_t>(h)][static_cast<size_t>(i)];
            EXPECT_NEAR(second[static_cast<size_t>(h)][static_cast<size_t>(i)], want, 1e-5 * std::fabs(want) + 1e-7) << inner;
          }
        // Stage 1: the inner top int((1-cr) L 0.5) are kept; stage 2 fills int(L(1-cr)) by the weighted scores.
        const auto n1 = static_cast<int64_t>((1 - ratio) * static_cast<double>(len) * 0.5), n = Budget{ratio}.keep(len);
        std::vector<int32_t> order(static_cast<size_t>(len));
        std::iota(order.begin(), order.end(), 0);
        auto by = [](const std::vector<float>& x) {
          return [&x](int32_t a, int32_t b) { return x[static_cast<size_t>(a)] > x[static_cast<size_t>(b)] || (x[static_cast<size_t>(a)] == x[static_cast<size_t>(b)] && a > b); };
        };
        std::sort(order.begin(), order.end(), by(sh));
        std::vector<float> w = second[static_cast<size_t>(h)];
        for (int64_t i = 0; i < n1; ++i) w[static_cast<size_t>(order[static_cast<size_t>(i)])] = INFINITY;
        std::sort(order.begin(), order.end(), by(w));
        int64_t keep_n = std::max<int64_t>(n, std::count(w.begin(), w.end(), INFINITY));
        std::vector<int32_t> want(order.begin(), order.begin() + std::min(keep_n, len));
        std::sort(want.begin(), want.end());
        EXPECT_EQ(got[static_cast<size_t>(h)], want) << inner << " layer " << v.layer << " head " << h;
      }
      ++checked;
    });
    EXPECT_EQ(checked, model->config().n_layer);
  }
}

TEST(WrapperPress, CriticalAdaKvKeepsTheLayerBudgetRagged) {
  auto model = Model::load(test_paths::stories260k());
  for (const char* inner : {"knorm", "snapkv"}) {
    auto press = make_press(std::string("critical_adakv(") + inner + ")");
    Session s(*model, {.threads = 1});
    prefill_with_press(s, prompt(), *press, Budget{0.25}, 0);
    const auto len = static_cast<int64_t>(prompt().size());
    for (int64_t l = 0; l < model->config().n_layer; ++l) {
      int64_t total = 0;
      for (int64_t h = 0; h < model->config().n_head_kv; ++h) total += s.cache().length(l, h);
      EXPECT_GE(total, model->config().n_head_kv * Budget{0.25}.keep(len)) << inner;
      if (std::string(inner) == "knorm") {
        EXPECT_EQ(total, model->config().n_head_kv * Budget{0.25}.keep(len));
      }
    }
  }
}

// composed(a, b) keeps what a then b keep when run by hand on the compacted cache, with a's
// statistics gathered to the kept slots (b = knorm/keydiff need none).
TEST(WrapperPress, ComposedEqualsThePressesInSequence) {
  auto model = Model::load(test_paths::stories260k());
  for (const auto& [a, b] : std::vector<std::pair<std::string, std::string>>{{"snapkv", "knorm"}, {"knorm", "keydiff"}, {"tova", "knorm"}}) {
    auto composed = make_press("composed(" + a + "," + b + ")");
    Session s1(*model, {.threads = 1, .kv_type_k = KvType::F32, .kv_type_v = KvType::F32});
    prefill_with_press(s1, prompt(), *composed, Budget{0.3}, 0);
    auto pa = make_press(a), pb = make_press(b);
    auto s2 = run(*model, pa->needs(), [&](const LayerView& v, KvCache& cache) {
      if (!v.stats.last_chunk) return;
      pa->compress(v, Budget{0.3}, cache);
      const LayerView after(*model, v.layer, cache, v.stats);
      pb->compress(after, Budget{0.3}, cache);
    });
    const auto len = static_cast<int64_t>(prompt().size());
    for (int64_t l = 0; l < model->config().n_layer; ++l)
      for (int64_t h = 0; h < model->config().n_head_kv; ++h) {
        const auto p1 = s1.cache().positions(l, h), p2 = s2->cache().positions(l, h);
        EXPECT_EQ(std::vector<int32_t>(p1.begin(), p1.end()), std::vector<int32_t>(p2.begin(), p2.end())) << a << "," << b;
        if (a != "snapkv" && a != "tova") {
          EXPECT_EQ(static_cast<int64_t>(p1.size()), Budget{0.3}.keep(Budget{0.3}.keep(len)));
        }
      }
  }
}

TEST(WrapperPress, ComposedGathersSlotStatisticsForLaterPresses) {
  // The second press scores the compacted cache with the last query's attention gathered to
  // the kept slots; ungathered rows would be misindexed.
  auto model = Model::load(test_paths::stories260k());
  auto composed = make_press("composed(tova,tova)");
  const SessionOptions o{.threads = 1, .kv_type_k = KvType::F32, .kv_type_v = KvType::F32};
  Session s1(*model, o);
  prefill_with_press(s1, prompt(), *composed, Budget{0.5}, 0);
  // tova twice: the second pass keeps the best half of the first pass's kept slots by the same
  // (gathered) attention, so the result equals one tova pass at ratio 0.75 (ties aside).
  Session s2(*model, o);
  auto once = make_press("tova");
  prefill_with_press(s2, prompt(), *once, Budget{0.75}, 0);
  const auto len = static_cast<int64_t>(prompt().size());
  for (int64_t l = 0; l < model->config().n_layer; ++l)
    for (int64_t h = 0; h < model->config().n_head_kv; ++h) {
      const auto p1 = s1.cache().positions(l, h), p2 = s2.cache().positions(l, h);
      if (Budget{0.5}.keep(Budget{0.5}.keep(len)) == Budget{0.75}.keep(len)) {
        EXPECT_EQ(std::vector<int32_t>(p1.begin(), p1.end()), std::vector<int32_t>(p2.begin(), p2.end())) << "layer " << l;
      }
    }
}

TEST(WrapperPress, PerLayerRatiosAndErrors) {
  auto model = Model::load(test_paths::stories260k());
  const SessionOptions o{.threads = 1};
  {
    Session s(*model, o);
    auto press = make_press("per_layer(knorm, ratios=0:0.25:0.5:0.75:0.5)");
    prefill_with_press(s, prompt(), *press, Budget{}, 0);
    const auto len = static_cast<int64_t>(prompt().size());
    const double ratios[] = {0, 0.25, 0.5, 0.75, 0.5};
    for (int64_t l = 0; l < 5; ++l) EXPECT_EQ(s.cache().length(l, 0), Budget{ratios[l]}.keep(len)) << l;
  }
  {
    Session s(*model, o);
    auto press = make_press("per_layer(knorm, ratios=0.1:0.2)");
    EXPECT_THROW(prefill_with_press(s, prompt(), *press, Budget{}, 0), Error);
  }
  {
    Session s(*model, o);
    auto press = make_press("per_layer(knorm, ratios=0.1:0.2:0.3:0.4:0.5)");
    EXPECT_THROW(prefill_with_press(s, prompt(), *press, Budget{0.5}, 0), Error);
  }
  EXPECT_THROW(make_press("per_layer(knorm)"), Error);
}

TEST(WrapperPress, SliceWrappersRejectAttentionScorers) {
  EXPECT_THROW(make_press("chunk(snapkv)"), Error);
  EXPECT_THROW(make_press("chunk(observed_attention)"), Error);
  EXPECT_THROW(make_press("block(tova)"), Error);
  EXPECT_NO_THROW(make_press("chunk(knorm, chunk_length=16)"));
  EXPECT_THROW(make_press("composed(knorm, snapkv, ratios=0.5)"), Error);
}

TEST(WrapperPress, KeyRerotationContinuesAtN) {
  auto model = Model::load(test_paths::stories260k());
  const SessionOptions o{.threads = 1};
  Session s(*model, o);
  auto press = make_press("key_rerotation(knorm)");
  prefill_with_press(s, prompt(), *press, Budget{0.5}, 8);
  const auto n = Budget{0.5}.keep(static_cast<int64_t>(prompt().size()));
  EXPECT_EQ(s.next_position(), n);
  s.eval({300});
  const auto p = s.cache().positions(0, 0);
  EXPECT_EQ(p.back(), n);
  // A head-wise allocator keeps different counts per head: refused.
  Session s2(*model, o);
  auto ragged = make_press("key_rerotation(adakv(snapkv))");
  EXPECT_THROW(prefill_with_press(s2, prompt(), *ragged, Budget{0.5}, 0), Error);
}
