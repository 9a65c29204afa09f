// Statistics requested from the forward pass: present only when asked, well-formed, and
// handed to the per-layer hook right after each layer's attention.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "kvsqueeze/session.h"
#include "test_paths.h"

using namespace kvsqueeze;

namespace {
const std::vector<int32_t> kPrompt = {1, 403, 407, 261, 378, 300, 290, 411, 322, 265, 282, 295, 433, 426, 385, 328};
}

TEST(LayerStats, NothingIsComputedUnlessRequested) {
  auto model = Model::load(test_paths::stories260k());
  Session s(*model, {});
  s.eval(kPrompt);
  for (const auto& st : s.layer_stats()) {
    EXPECT_TRUE(st.attention.window.empty());
    EXPECT_TRUE(st.attention.column_sums.empty());
    EXPECT_TRUE(st.pre_rope_queries.empty());
    EXPECT_TRUE(st.hidden_states.empty());
  }
}

TEST(LayerStats, RequestedStatisticsAreWellFormed) {
  auto model = Model::load(test_paths::stories260k());
  const auto& c = model->config();
  Session s(*model, {});
  StatsRequest req;
  req.window_queries = 4;
  req.column_sums = true;
  req.pre_rope_query_rows = 4;
  req.hidden_states = true;
  s.set_stats_request(req);
  int hook_calls = 0;
  s.set_layer_hook([&](const LayerStats& st, KvCache& cache) {
    EXPECT_EQ(st.layer, hook_calls);
    EXPECT_EQ(cache.length(st.layer, 0), static_cast<int64_t>(kPrompt.size()));  // chunk already appended
    ++hook_calls;
  });
  s.eval(kPrompt);
  EXPECT_EQ(hook_calls, c.n_layer);
  const int64_t n = static_cast<int64_t>(kPrompt.size());
  for (const auto& st : s.layer_stats()) {
    ASSERT_EQ(st.attention.window.size(), static_cast<size_t>(c.n_head));
    ASSERT_EQ(st.attention.column_sums.size(), static_cast<size_t>(c.n_head));
    for (int64_t h = 0; h < c.n_head; ++h) {
      const auto& w = st.attention.window[static_cast<size_t>(h)];
      ASSERT_EQ(w.size(), static_cast<size_t>(4 * n));
      for (int64_t r = 0; r < 4; ++r) {
        const float row_sum = std::accumulate(w.begin() + r * n, w.begin() + (r + 1) * n, 0.0f);
        EXPECT_NEAR(row_sum, 1.0f, 1e-5f);
        // Causal: window row r is query n-4+r, which cannot see later slots.
        for (int64_t j = n - 4 + r + 1; j < n; ++j) EXPECT_EQ(w[static_cast<size_t>(r * n + j)], 0.0f);
      }
      const auto& col = st.attention.column_sums[static_cast<size_t>(h)];
      EXPECT_NEAR(std::accumulate(col.begin(), col.end(), 0.0), static_cast<double>(n), 1e-3);  // each query sums to 1
      EXPECT_NEAR(col[static_cast<size_t>(n - 1)], w[static_cast<size_t>(3 * n + n - 1)], 1e-6);  // only the last query sees the last slot
    }
    EXPECT_EQ(st.pre_rope_rows, 4);
    EXPECT_EQ(st.pre_rope_queries.size(), static_cast<size_t>(4 * c.n_head * c.head_dim_k));
    EXPECT_EQ(st.hidden_states.size(), static_cast<size_t>(n * c.n_embd));
    EXPECT_EQ(st.positions.size(), static_cast<size_t>(n));
  }
}

// A long prefill computes the window probabilities once, for the last chunk, unless the
// request asks for them after every chunk (presses compressing between chunks).
TEST(LayerStats, WindowProbabilitiesComeWithTheLastChunkUnlessEveryChunkIsAsked) {
  auto model = Model::load(test_paths::stories260k());
  for (const bool every : {false, true}) {
    Session s(*model, {.chunk = 4});
    s.set_stats_request({.window_queries = 2, .window_every_chunk = every});
    std::vector<std::pair<bool, bool>> seen;  // (last chunk, windows present) per layer call
    s.set_layer_hook([&](const LayerStats& st, KvCache&) { seen.emplace_back(st.last_chunk, !st.attention.window.empty()); });
    s.eval(kPrompt);
    ASSERT_EQ(seen.size(), kPrompt.size() / 4 * static_cast<size_t>(model->config().n_layer));
    for (const auto& [last, windows] : seen) EXPECT_EQ(windows, last || every) << "every_chunk " << every;
  }
}

TEST(LayerStats, ValueNormsMatchTheCachedValues) {
  auto model = Model::load(test_paths::stories260k());
  Session s(*model, {.kv_type_k = KvType::F32, .kv_type_v = KvType::F32});
  s.eval(kPrompt);
  const auto norms = value_norms(s.cache(), 2, 1);
  const auto run = s.cache().run(2, 1);
  ASSERT_EQ(norms.size(), static_cast<size_t>(run.len));
  const float* v = static_cast<const float*>(run.v) + 5 * run.v_stride;
  double sum = 0;
  for (int64_t i = 0; i < model->config().head_dim_v; ++i) sum += v[i] * v[i];
  EXPECT_NEAR(norms[5], std::sqrt(sum), 1e-5);
}
