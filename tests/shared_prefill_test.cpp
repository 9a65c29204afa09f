// One prefill serving many presses: each cell's compressed copy must be exactly what that press
// gives with a prefill of its own (same kept slots, positions and bytes), over several chunks,
// with sliding-window layers (synthetic gemma3), global presses (finish) and key re-rotation.
// Exactness needs the same chunk layout: a session makes its last chunk at least as long as the
// query window it was asked for, so the tests use windows that fit the last chunk (a longer
// window only moves chunk boundaries: the same arithmetic in another order, tested to rounding).
#include <gtest/gtest.h>

#include <cstring>

#include "fixture_models.h"
#include "kvsqueeze/press.h"
#include "kvsqueeze/press_pipeline.h"
#include "kvsqueeze/shared_prefill.h"
#include "test_paths.h"

using namespace kvsqueeze;

namespace {

std::vector<int32_t> prompt_ids(const Model& m, int n) {
  std::vector<int32_t> ids;
  uint64_t x = 12345;
  ids.push_back(m.tokenizer().bos_id() >= 0 ? m.tokenizer().bos_id() : 1);
  while (static_cast<int>(ids.size()) < n) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    ids.push_back(static_cast<int32_t>(3 + (x >> 33) % static_cast<uint64_t>(m.config().n_vocab - 3)));
  }
  return ids;
}

void expect_same_cache(const KvCache& want, const KvCache& got, const std::string& what) {
  for (int64_t l = 0; l < want.shape().n_layer; ++l)
    for (int64_t h = 0; h < want.shape().n_head_kv; ++h) {
      const int64_t n = want.length(l, h);
      ASSERT_EQ(got.length(l, h), n) << what << " layer " << l << " head " << h;
      const auto pw = want.positions(l, h), pg = got.positions(l, h);
      ASSERT_TRUE(std::equal(pw.begin(), pw.end(), pg.begin())) << what << " positions, layer " << l << " head " << h;
      ASSERT_EQ(want.k_row_bytes(l, h), got.k_row_bytes(l, h)) << what;
      EXPECT_EQ(std::memcmp(want.k_bytes(l, h), got.k_bytes(l, h), static_cast<size_t>(n) * want.k_row_bytes(l, h)), 0)
          << what << " keys, layer " << l << " head " << h;
      EXPECT_EQ(std::memcmp(want.v_bytes(l, h), got.v_bytes(l, h), static_cast<size_t>(n) * want.v_row_bytes()), 0)
          << what << " values, layer " << l << " head " << h;
    }
}

struct Cell {
  std::string expression;
  Budget budget;
};

void check_cells(const Model& model, const std::vector<Cell>& cells, int n_tokens, int64_t chunk) {
  const auto ids = prompt_ids(model, n_tokens);
  const SessionOptions o{.chunk = chunk, .threads = 1, .kv_type_k = KvType::F32, .kv_type_v = KvType::F32};
  Session shared(model, o);
  std::vector<std::unique_ptr<Press>> presses;
  std::vector<PrefillCell> prefill_cells;
  for (const auto& c : cells) {
    presses.push_back(c.expression == "none" ? nullptr : make_press(c.expression));
    prefill_cells.push_back({presses.back().get(), c.budget});
  }
  auto contexts = shared_prefill(shared, ids, prefill_cells);
  ASSERT_EQ(contexts.size(), cells.size());
  const std::vector<float> logits = shared.last_logits();
  const int32_t end = shared.next_position();
  for (size_t i = 0; i < cells.size(); ++i) {
    SCOPED_TRACE(cells[i].expression);
    ASSERT_TRUE(contexts[i].shareable);
    // Its own prefill, as `generate --press` runs it.
    Session own(model, o);
    auto press = cells[i].expression == "none" ? nullptr : make_press(cells[i].expression);
    if (press) prefill_with_press(own, ids, *press, cells[i].budget, 0);
    else own.eval(ids);
    Session installed(model, o);
    install_context(installed, contexts[i], prefill_cells[i], end, logits, 0);
    expect_same_cache(own.cache(), installed.cache(), cells[i].expression);
    EXPECT_EQ(own.next_position(), installed.next_position());
    EXPECT_EQ(own.last_logits(), installed.last_logits());
    // And the next token sees the same cache.
    EXPECT_EQ(own.eval({7}), installed.eval({7}));
  }
}

}  // namespace

TEST(SharedPrefill, EveryCellEqualsItsOwnPrefillOverSeveralChunks) {
  auto model = Model::load(test_paths::stories260k());
  check_cells(*model,
              {{"none", {}},
               {"snapkv(window_size=16)", {0.5}},
               {"snapkv(window_size=8)", {0.25}},
               {"tova", {0.5}},
               {"observed_attention", {0.5}},  // column sums accumulated over every chunk
               {"expected_attention", {0.75}},
               {"knorm", {0.5}},
               {"streaming_llm", {0.0, 20}},
               {"adakv(snapkv)", {0.5}},
               {"key_rerotation(knorm)", {0.5}},  // renumbers positions: the next position moves
               {"kvzip", {0.5}},                  // global, with extra passes in finish()
               {"composed(snapkv(window_size=16),think)", {0.5}},
               {"lagkv", {0.5}},
               // Merging wrappers: values merged per cell, on the shared path as on its own.
               {"merging(snapkv(window_size=16))", {0.5}},
               {"merging(adakv(snapkv), merge_fraction=0.5)", {0.5}},
               {"merging(kvzip)", {0.5}},  // merges after finish()
               {"cam(snapkv(window_size=16), merge_budget=8)", {0.5}},  // attention column sums over every chunk
               {"cam(adakv(snapkv))", {0.5}},
               {"cam(kvzip)", {0.5}}},
              160, 32);
}

TEST(SharedPrefill, SlidingWindowLayersAreCopiedNotCompressed) {
  std::string why;
  const std::string path = fixture_models::test_model_path("synth_gemma3_f32", &why);
  if (path.empty()) GTEST_SKIP() << why;
  auto model = Model::load(path);
  check_cells(*model, {{"none", {}}, {"snapkv(window_size=16)", {0.5}}, {"tova", {0.25}}, {"expected_attention", {0.5}}}, 128, 16);
}

TEST(SharedPrefill, AChunkTriggeredPressIsMarkedNotShareable) {
  auto model = Model::load(test_paths::stories260k());
  const auto ids = prompt_ids(*model, 200);
  Session s(*model, {.chunk = 32, .threads = 1});
  auto lag = make_press("lagkv(mode=lagkv, lag_size=16)");
  auto snap = make_press("snapkv");
  auto contexts = shared_prefill(s, ids, {{lag.get(), {0.5}}, {snap.get(), {0.5}}});
  EXPECT_FALSE(contexts[0].shareable);
  EXPECT_TRUE(contexts[1].shareable);
}

TEST(SharedPrefill, StatisticsAreCutToWhatEachPressAskedFor) {
  LayerStats shared;
  shared.positions = {0, 1, 2, 3};
  shared.attention.window_rows = 3;
  shared.attention.window = {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}};  // 3 rows x 4 slots
  shared.attention.column_sums = {{1, 1, 1, 1}};
  shared.pre_rope_rows = 2;
  shared.pre_rope_queries = {1, 2, 3, 4};  // 2 rows of width 2
  StatsRequest want;
  want.window_queries = 1;
  want.pre_rope_query_rows = 1;
  const LayerStats s = stats_for(shared, want);
  EXPECT_EQ(s.attention.window_rows, 1);
  EXPECT_EQ(s.attention.window[0], (std::vector<float>{9, 10, 11, 12}));
  EXPECT_TRUE(s.attention.column_sums.empty());
  EXPECT_EQ(s.pre_rope_rows, 1);
  EXPECT_EQ(s.pre_rope_queries, (std::vector<float>{3, 4}));
  EXPECT_TRUE(s.hidden_states.empty());
}

TEST(SharedPrefill, ALongerQueryWindowOnlyMovesChunkBoundaries) {
  // snapkv's default window (64) exceeds the chunk (32): the shared prefill's last chunk grows to
  // 64 rows, the uncompressed copy's does not. The weight products of prompt rows do not depend on
  // the chunk (Backend::matmul), but attention over a prompt is computed in query blocks whose
  // key ranges follow the chunks: fp32 rounding differences only (equal to the bit on AVX-512 here,
  // not with the AVX2 kernels).
  auto model = Model::load(test_paths::stories260k());
  const auto ids = prompt_ids(*model, 150);
  const SessionOptions o{.chunk = 32, .threads = 1, .kv_type_k = KvType::F32, .kv_type_v = KvType::F32};
  Session shared(*model, o);
  auto snap = make_press("snapkv");
  auto contexts = shared_prefill(shared, ids, {{nullptr, {}}, {snap.get(), {0.5}}});
  Session own(*model, o), installed(*model, o);
  own.eval(ids);
  install_context(installed, contexts[0], {nullptr, {}}, shared.next_position(), shared.last_logits(), 0);
  const auto a = own.eval({7}), b = installed.eval({7});
  float worst = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i])), scale = std::max(scale, std::abs(a[i]));
  EXPECT_LT(worst, 1e-4f * scale);
}
