// ThinK key-channel pruning in the cache: after the press, each pruned run stores only its kept
// key channels (K memory really shrinks) and attention sums q.k over those channels, for the
// context's keys and for every key appended later. Checked against tests/reference_forward.h,
// a naive double-precision dense forward pass whose q.k, for queries after the context, runs
// over the same channels. Also: the cache-level operation, cache files of pruned caches, and
// Finch's options.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

#include <unistd.h>

#include "kvsqueeze/cache_file.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"
#include "kvsqueeze/session.h"
#include "reference_forward.h"
#include "test_paths.h"

using namespace kvsqueeze;

namespace {

std::vector<int32_t> random_tokens(uint32_t seed, int64_t n, int64_t vocab) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> pick(3, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> out{1};
  while (static_cast<int64_t>(out.size()) < n) out.push_back(pick(rng));
  return out;
}

// Prefills `ids` compressing every full-attention layer with `press` after its attention, at
// ratio 0.5 (think ignores it, but it is not "no compression").
void prefill(Session& s, Press& press, const std::vector<int32_t>& ids) {
  s.set_stats_request(press.needs());
  s.set_layer_hook([&](const LayerStats& st, KvCache& cache) {
    const LayerView view(s.model(), st.layer, cache, st);
    press.observe(view);
    if (st.last_chunk) compress_layer(press, view, Budget{0.5}, cache);
  });
  s.eval(ids);
  s.set_layer_hook(nullptr);
  s.set_stats_request({});
}

double max_rel_diff(const float* got, const std::vector<double>& want) {
  double scale = 0, diff = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, std::fabs(want[i]));
    diff = std::max(diff, std::fabs(static_cast<double>(got[i]) - want[i]));
  }
  return diff / scale;
}

using Channels = std::vector<std::vector<std::vector<int32_t>>>;  // [layer][head]

Channels channels_of(const KvCache& cache) {
  Channels out(static_cast<size_t>(cache.shape().n_layer));
  for (int64_t l = 0; l < cache.shape().n_layer; ++l)
    for (int64_t h = 0; h < cache.shape().n_head_kv; ++h) {
      const auto c = cache.key_channels(l, h);
      out[static_cast<size_t>(l)].emplace_back(c.begin(), c.end());
    }
  return out;
}

}  // namespace

TEST(Think, LaterTokensAttendOverTheKeptChannelsOfEveryKey) {
  auto model = Model::load(test_paths::stories260k());
  const ModelConfig& c = model->config();
  const int64_t L = 60, more = 12, V = c.n_vocab;
  const auto ids = random_tokens(7, L + more, V);
  const std::vector<int32_t> context(ids.begin(), ids.begin() + L), rest(ids.begin() + L, ids.end());

  SessionOptions o;
  o.kv_type_k = o.kv_type_v = KvType::F32;
  Session s(*model, o);
  auto press = make_press("think", {"key_channel_compression_ratio=0.5", "window_size=16"});
  prefill(s, *press, context);
  const Channels kept = channels_of(s.cache());
  for (const auto& layer : kept)
    for (const auto& head : layer) ASSERT_EQ(static_cast<int64_t>(head.size()), c.head_dim_k / 2);
  // A chunk of queries (the blocked prefill kernel), then single tokens (the decode kernel).
  std::vector<float> got;
  s.eval({rest.begin(), rest.begin() + 9}, &got);
  for (size_t i = 9; i < rest.size(); ++i) {
    const auto& row = s.eval({rest[i]});
    got.insert(got.end(), row.begin(), row.end());
  }
  for (const auto& layer : s.cache().lengths())
    for (int64_t len : layer) EXPECT_EQ(len, L + more);  // no token evicted
  EXPECT_EQ(channels_of(s.cache()), kept);                 // later keys are stored pruned too

  reference::ReferenceModel ref(*model);
  const auto pruned = ref.forward(ids, reference::all_visible, reference::KvRounding::None, L,
                                  [&](int64_t l, int64_t h, int32_t q, int32_t) -> const std::vector<int32_t>* {
                                    return q >= L ? &kept[static_cast<size_t>(l)][static_cast<size_t>(h)] : nullptr;
                                  });
  // kvpress's semantics: only the context's keys lose their channels.
  const auto prefix_only = ref.forward(ids, reference::all_visible, reference::KvRounding::None, L,
                                       [&](int64_t l, int64_t h, int32_t q, int32_t k) -> const std::vector<int32_t>* {
                                         return q >= L && k < L ? &kept[static_cast<size_t>(l)][static_cast<size_t>(h)] : nullptr;
                                       });
  const auto dense = ref.forward(ids, reference::all_visible, reference::KvRounding::None, L);
  double err = 0, effect = 0, vs_prefix_only = 0;
  for (int64_t t = 0; t < more; ++t) {
    const float* row = got.data() + t * V;
    err = std::max(err, max_rel_diff(row, pruned[static_cast<size_t>(L + t)]));
    effect = std::max(effect, max_rel_diff(row, dense[static_cast<size_t>(L + t)]));
    vs_prefix_only = std::max(vs_prefix_only, max_rel_diff(row, prefix_only[static_cast<size_t>(L + t)]));
  }
  std::printf("[ think    ] max rel err %.3e; pruning moves logits by %.3e; kvpress (prefix-only) differs by %.3e\n", err,
              effect, vs_prefix_only);
  EXPECT_LE(err, 1e-4);
  EXPECT_GT(effect, 1e-2);  // not vacuous
}

TEST(Think, BytesHeldDropByThePrunedChannelsAndStatisticsUseThem) {
  auto model = Model::load(test_paths::stories260k());
  const ModelConfig& c = model->config();
  Session s(*model, {});  // f16 cache
  const auto ids = random_tokens(3, 50, c.n_vocab);
  auto press = make_press("think", {"key_channel_compression_ratio=0.75"});
  const size_t dense_held = [&] {
    Session d(*model, {});
    d.eval(ids);
    return d.cache().bytes_held();
  }();
  prefill(s, *press, ids);
  size_t pruned_bytes = 0;
  for (int64_t l = 0; l < c.n_layer; ++l)
    for (int64_t h = 0; h < c.n_head_kv; ++h) {
      const int64_t kept = static_cast<int64_t>(s.cache().key_channels(l, h).size());
      EXPECT_EQ(kept, c.head_dim_k - static_cast<int64_t>(c.head_dim_k * 0.75));
      pruned_bytes += static_cast<size_t>(s.cache().capacity(l, h) * (c.head_dim_k - kept)) * 2;
    }
  EXPECT_EQ(s.cache().bytes_held(), dense_held - pruned_bytes);
  // The probabilities of the statistics pass use the same channels as attention: rows sum to 1.
  StatsRequest r;
  r.window_queries = 4;
  r.column_sums = true;
  s.set_stats_request(r);
  s.eval(random_tokens(4, 9, c.n_vocab));
  for (const auto& st : s.layer_stats())
    for (const auto& p : st.attention.window)
      for (int64_t row = 0; row < 4; ++row) {
        double sum = 0;
        for (size_t j = 0; j < p.size() / 4; ++j) sum += p[static_cast<size_t>(row) * (p.size() / 4) + j];
        EXPECT_NEAR(sum, 1.0, 1e-4);
      }
}

TEST(Think, CacheKeepKeyChannels) {
  KvCacheShape shape;
  shape.n_layer = 1;
  shape.n_head_kv = 2;
  shape.head_dim_k = 4;
  shape.head_dim_v = 2;
  shape.k_type = shape.v_type = KvType::F32;
  KvCache cache(shape, 5);
  std::vector<float> k, v;
  std::vector<int32_t> pos;
  for (int t = 0; t < 3; ++t) {
    for (int i = 0; i < 8; ++i) k.push_back(static_cast<float>(100 * t + i));
    for (int i = 0; i < 4; ++i) v.push_back(static_cast<float>(t));
    pos.push_back(t);
  }
  cache.append(0, 3, k.data(), v.data(), pos.data());
  const size_t held = cache.bytes_held();
  const std::vector<int32_t> keep{1, 3};
  cache.keep_key_channels(0, 1, keep);
  EXPECT_EQ(held - cache.bytes_held(), 5u * 2 * sizeof(float));
  EXPECT_EQ(cache.k_row_bytes(0, 1), 2 * sizeof(float));
  EXPECT_EQ(cache.k_row_bytes(0, 0), 4 * sizeof(float));
  const auto read = [&](int64_t h) {
    const auto* p = reinterpret_cast<const float*>(cache.k_bytes(0, h));
    return std::vector<float>(p, p + cache.length(0, h) * static_cast<int64_t>(cache.k_row_bytes(0, h) / sizeof(float)));
  };
  EXPECT_EQ(read(1), (std::vector<float>{5, 7, 105, 107, 205, 207}));
  // Appended keys are stored with the same channels; compaction keeps them aligned.
  const std::vector<float> k3{300, 301, 302, 303, 304, 305, 306, 307}, v3{3, 3, 3, 3};
  const int32_t p3 = 3;
  cache.append(0, 1, k3.data(), v3.data(), &p3);
  const std::vector<int32_t> slots{0, 3};
  cache.compact(0, 1, slots);
  EXPECT_EQ(read(1), (std::vector<float>{5, 7, 305, 307}));
  // A second pruning keeps a subset; re-adding a pruned channel is an error.
  const std::vector<int32_t> keep2{3};
  cache.keep_key_channels(0, 1, keep2);
  EXPECT_EQ(read(1), (std::vector<float>{7, 307}));
  const std::vector<int32_t> bad{0, 3};
  EXPECT_THROW(cache.keep_key_channels(0, 1, bad), Error);
  // The view scatters kept channels back to head_dim_k with zeros.
  const auto run = cache.run(0, 1);
  ASSERT_NE(run.k_channels, nullptr);
  EXPECT_EQ(run.k_stride, 1);
  cache.release_slack(0);
  EXPECT_EQ(read(1), (std::vector<float>{7, 307}));
  cache.clear();  // a new sequence stores full keys again
  EXPECT_TRUE(cache.key_channels(0, 1).empty());
  EXPECT_EQ(cache.k_row_bytes(0, 1), 4 * sizeof(float));
}

TEST(Think, PrunedCacheFileRoundTrip) {
  auto model = Model::load(test_paths::stories260k());
  const auto ids = random_tokens(5, 40, model->config().n_vocab);
  Session s(*model, {});
  auto press = make_press("think", {"key_channel_compression_ratio=0.25"});
  prefill(s, *press, ids);
  const std::string path = (std::filesystem::temp_directory_path() / ("kvsq_think_" + std::to_string(::getpid()) + ".kvc")).string();
  save_cache(s, ids, path);
  EXPECT_EQ(read_cache_info(path).version, 2u);
  Session t(*model, {});
  load_cache(t, path);
  EXPECT_EQ(channels_of(t.cache()), channels_of(s.cache()));
  EXPECT_EQ(t.cache().bytes_used(), s.cache().bytes_used());
  const std::vector<int32_t> next{ids[3], ids[4]};
  const std::vector<float> a = s.eval(next), b = t.eval(next);
  EXPECT_EQ(a, b);
  // An unpruned cache is still written as version 1.
  Session u(*model, {});
  u.eval(ids);
  save_cache(u, ids, path);
  EXPECT_EQ(read_cache_info(path).version, 1u);
  std::filesystem::remove(path);
}

TEST(Finch, OptionsAndChunkedBudget) {
  EXPECT_THROW(make_press("finch", {"rerotate_keys=false"}), Error);  // window_size is required
  EXPECT_NE(make_press("finch", {"window_size=4"})->next_position(), 0);  // rerotate_keys=true (default) is accepted
  auto model = Model::load(test_paths::stories260k());
  const auto ids = random_tokens(9, 70, model->config().n_vocab);
  const SessionOptions o{.kv_type_k = KvType::F32, .kv_type_v = KvType::F32};
  // Per chunk of 32 slots (70 = 32 + 32 + 6), each keeps int(len * 0.5); the last 8 (the
  // question) are always kept, so the last chunk keeps all 6 of its slots (protected slots are
  // never evicted; kvpress would keep 3 of its 6 tied question slots).
  auto press = make_press("finch", {"window_size=8", "rerotate_keys=false", "chunk_length=32"});
  Session s(*model, o);
  prefill(s, *press, ids);
  for (int64_t l = 0; l < model->config().n_layer; ++l)
    for (int64_t h = 0; h < model->config().n_head_kv; ++h) {
      const auto p = s.cache().positions(l, h);
      EXPECT_EQ(p.size(), 16u + 16u + 6u);
      EXPECT_EQ(std::count_if(p.begin(), p.end(), [](int32_t x) { return x < 32; }), 16);
      EXPECT_EQ(std::count_if(p.begin(), p.end(), [](int32_t x) { return x >= 32 && x < 64; }), 16);
      for (int32_t q = 62; q < 70; ++q) EXPECT_TRUE(std::binary_search(p.begin(), p.end(), q)) << q;
    }
  // chunk_length must exceed window_size / (1 - ratio).
  auto tight = make_press("finch", {"window_size=20", "rerotate_keys=false", "chunk_length=32"});
  Session t(*model, o);
  EXPECT_THROW(prefill(t, *tight, ids), Error);
}
