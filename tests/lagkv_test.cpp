// LagKV: the scoring maths on hand-computed partitions, and the press's incremental flow (LagKV's
// own: compress whenever 2 lag slots past the compressed prefix are uncompressed) driven step by
// step on a cache, against the one-shot formula on the same partitions.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <set>

#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"
#include "kvsqueeze/session.h"
#include "press/lagkv_math.h"
#include "test_paths.h"

using namespace kvsqueeze;

namespace {

// Partition x (2 rows, 3 channels) against ref: lo = (0,0,0), hi = (2,4,6).
//   row 0 (2,0,3) -> (1, 0, 0.5): mean 0.5, squares 0.25+0.25+0 = 0.5, /(d-1) = 0.25, std 0.5
//   row 1 (0,4,0) -> (0, 1, 0):   mean 1/3, squares 1/9+4/9+1/9 = 2/3, /(d-1) = 1/3, std 1/sqrt(3)
TEST(LagKvMath, PartitionScoreByHand) {
  const float x[] = {2, 0, 3, 0, 4, 0};
  const float ref[] = {0, 0, 0, 2, 4, 6};
  const auto s = lagkv::partition_scores(x, ref, 2, 3, 1e-6);
  const double u0 = 0.5, u1 = 1.0 / std::sqrt(3.0);
  const double z = std::exp(u0) + std::exp(u1);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_NEAR(s[0], std::exp(u0) / z, 1e-7);
  EXPECT_NEAR(s[1], std::exp(u1) / z, 1e-7);
  EXPECT_NEAR(s[0] + s[1], 1.0, 1e-7);
  // The raw formula is the same where no channel of ref is constant.
  const auto raw = lagkv::partition_scores(x, ref, 2, 3, 0.0);
  EXPECT_EQ(raw, s);
}

// Only the NEXT partition's range matters: rows of x outside it are fine (values above hi).
TEST(LagKvMath, RangeComesFromTheNextPartition) {
  const float x[] = {4, 0, 0, 0, 8, 0};  // row 0 -> (2, 0, 0): std 2/sqrt(3); row 1 -> (0, 2, 0): the same
  const float ref[] = {0, 0, 0, 2, 4, 6};
  const auto s = lagkv::partition_scores(x, ref, 2, 3, 1e-6);
  EXPECT_NEAR(s[0], 0.5, 1e-7);
  EXPECT_NEAR(s[1], 0.5, 1e-7);
}

// A constant channel in the next partition: LagKV divides by zero; the guard divides by 1e-6.
//   ref channel 0 is constant 1, channel 1 spans [0, 2].
//   row 0 (1, 1): guarded (0, 0.5): std sqrt(0.125); raw 0/0 = NaN
//   row 1 (1, 2): guarded (0, 1): std sqrt(0.5); raw NaN
TEST(LagKvMath, ConstantChannelGuard) {
  const float x[] = {1, 1, 1, 2};
  const float ref[] = {1, 0, 1, 2};
  const auto s = lagkv::partition_scores(x, ref, 2, 2, 1e-6);
  const double u0 = std::sqrt(0.125), u1 = std::sqrt(0.5), z = std::exp(u0) + std::exp(u1);
  EXPECT_NEAR(s[0], std::exp(u0) / z, 1e-7);
  EXPECT_NEAR(s[1], std::exp(u1) / z, 1e-7);
  const auto raw = lagkv::partition_scores(x, ref, 2, 2, 0.0);
  EXPECT_TRUE(std::isnan(raw[0]) && std::isnan(raw[1]));
  // NaN ranks lowest, in top-k and in ranks.
  const std::vector<float> scores = {NAN, 0.1f, 0.3f, NAN};
  EXPECT_EQ(lagkv::top_k_per_partition(scores, 4, 2), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(lagkv::rank_scores(scores.data(), 4), (std::vector<float>{0.0f, 0.5f, 0.75f, 0.25f}));
}

TEST(LagKvMath, RanksAndTopK) {
  const std::vector<float> s = {0.3f, 0.1f, 0.3f, 0.2f};
  // Equal scores: the later row ranks higher.
  EXPECT_EQ(lagkv::rank_scores(s.data(), 4), (std::vector<float>{0.5f, 0.0f, 0.75f, 0.25f}));
  const std::vector<float> two = {0.1f, 0.5f, 0.5f, 0.9f, 0.2f, 0.1f};
  EXPECT_EQ(lagkv::top_k_per_partition(two, 3, 2), (std::vector<int32_t>{1, 2, 3, 4}));
  EXPECT_EQ(lagkv::top_k_per_partition(two, 3, 1), (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(lagkv::top_k_per_partition(two, 3, 0), (std::vector<int32_t>{}));
}

TEST(LagKvMath, KeepPerPartition) {
  EXPECT_EQ(lagkv::keep_per_partition(0.5, 128), 64);
  EXPECT_EQ(lagkv::keep_per_partition(0.8, 128), 25);  // 0.2 * 128 = 25.6
  EXPECT_EQ(lagkv::keep_per_partition(0.9, 10), 1);    // (1 - 0.9) * 10 = 0.99999999999999978
  EXPECT_EQ(lagkv::keep_per_partition(0.0, 16), 16);
}

// Keys and values are combined as kvpress ((s_K + s_V) / 2) or LagKV (s_K + r s_V); partition c
// is scored against c + 1, and the last partition is not scored.
TEST(LagKvMath, RegionCombinesKeysAndValues) {
  std::mt19937 rng(7);
  std::normal_distribution<float> n01;
  const int64_t lag = 4, dk = 3, dv = 5, m = 3;
  std::vector<float> k(static_cast<size_t>(m * lag * dk)), v(static_cast<size_t>(m * lag * dv));
  for (auto& x : k) x = n01(rng);
  for (auto& x : v) x = n01(rng);
  lagkv::Params p;
  p.lag = lag;
  p.kvpress_mean = false;
  p.score_v_ratio = 0.5;
  const auto lag_scores = lagkv::region_scores(k.data(), dk, v.data(), dv, m, p);
  p.kvpress_mean = true;
  const auto kvp = lagkv::region_scores(k.data(), dk, v.data(), dv, m, p);
  p.ranks = true;
  const auto ranks = lagkv::region_scores(k.data(), dk, v.data(), dv, m, p);
  ASSERT_EQ(lag_scores.size(), static_cast<size_t>((m - 1) * lag));
  for (int64_t c = 0; c + 1 < m; ++c) {
    const auto sk = lagkv::partition_scores(k.data() + c * lag * dk, k.data() + (c + 1) * lag * dk, lag, dk, 1e-6);
    const auto sv = lagkv::partition_scores(v.data() + c * lag * dv, v.data() + (c + 1) * lag * dv, lag, dv, 1e-6);
    std::vector<float> mean(static_cast<size_t>(lag));
    for (int64_t t = 0; t < lag; ++t) {
      const size_t i = static_cast<size_t>(c * lag + t);
      EXPECT_FLOAT_EQ(lag_scores[i], sk[static_cast<size_t>(t)] + 0.5f * sv[static_cast<size_t>(t)]);
      EXPECT_FLOAT_EQ(kvp[i], (sk[static_cast<size_t>(t)] + sv[static_cast<size_t>(t)]) / 2);
      mean[static_cast<size_t>(t)] = kvp[i];
    }
    const auto r = lagkv::rank_scores(mean.data(), lag);
    for (int64_t t = 0; t < lag; ++t) EXPECT_EQ(ranks[static_cast<size_t>(c * lag + t)], r[static_cast<size_t>(t)]);
  }
}

// A cache of stories260K's shape filled with random rows, for driving the press directly.
struct Driver {
  std::unique_ptr<Model> model = Model::load(test_paths::stories260k());
  KvCache cache;
  LayerStats stats;
  std::mt19937 rng{1234};
  std::vector<std::vector<float>> k_hist, v_hist;  // per head: every appended row, by position
  int32_t seen = 0;

  static KvCacheShape shape_of(const Model& m) {
    KvCacheShape s;
    s.n_layer = m.config().n_layer;
    s.n_head_kv = m.config().n_head_kv;
    s.head_dim_k = m.config().head_dim_k;
    s.head_dim_v = m.config().head_dim_v;
    s.k_type = s.v_type = KvType::F32;
    s.layer_window.assign(static_cast<size_t>(s.n_layer), 0);
    return s;
  }
  Driver() : cache(shape_of(*model), 16) {
    k_hist.resize(static_cast<size_t>(hkv()));
    v_hist.resize(static_cast<size_t>(hkv()));
  }
  int64_t hkv() const { return model->config().n_head_kv; }
  int64_t dk() const { return model->config().head_dim_k; }
  int64_t dv() const { return model->config().head_dim_v; }
  LayerView view() {
    stats.layer = 0;
    return LayerView(*model, 0, cache, stats);
  }
  void append(int64_t n) {
    std::normal_distribution<float> n01;
    std::vector<float> k(static_cast<size_t>(n * hkv() * dk())), v(static_cast<size_t>(n * hkv() * dv()));
    std::vector<int32_t> pos(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) {
      pos[static_cast<size_t>(t)] = seen + static_cast<int32_t>(t);
      for (int64_t h = 0; h < hkv(); ++h) {
        for (int64_t c = 0; c < dk(); ++c) {
          const float x = n01(rng) * static_cast<float>(1 + h);
          k[static_cast<size_t>((t * hkv() + h) * dk() + c)] = x;
          k_hist[static_cast<size_t>(h)].push_back(x);
        }
        for (int64_t c = 0; c < dv(); ++c) {
          const float x = n01(rng);
          v[static_cast<size_t>((t * hkv() + h) * dv() + c)] = x;
          v_hist[static_cast<size_t>(h)].push_back(x);
        }
      }
    }
    cache.append(0, n, k.data(), v.data(), pos.data());
    stats.positions = pos;
    seen += static_cast<int32_t>(n);
  }
  std::vector<int32_t> positions(int64_t h) const {
    const auto p = cache.positions(0, h);
    return {p.begin(), p.end()};
  }
};

struct Flow {
  int64_t n_sink, lag;
  double ratio;
};

// What LagKV keeps of `seen` tokens after compressing whenever triggered, from the one-shot
// formula: P = floor((seen - n_sink) / lag) - 1 partitions are scored (each against the next, as
// one call over [n_sink, n_sink + (P+1) lag) would) and keep k each; the tail is the rest.
std::vector<int32_t> expected_positions(const Driver& d, int64_t h, const Flow& f, int64_t* partitions) {
  const int64_t seen = d.seen, k = lagkv::keep_per_partition(f.ratio, f.lag);
  const int64_t parts = seen - f.n_sink >= 2 * f.lag ? (seen - f.n_sink) / f.lag - 1 : 0;
  *partitions = parts;
  std::vector<int32_t> out;
  for (int32_t i = 0; i < std::min<int64_t>(f.n_sink, seen); ++i) out.push_back(i);
  if (parts > 0) {
    lagkv::Params p;
    p.lag = f.lag;
    p.kvpress_mean = false;
    const auto s = lagkv::region_scores(d.k_hist[static_cast<size_t>(h)].data() + f.n_sink * d.dk(), d.dk(),
                                        d.v_hist[static_cast<size_t>(h)].data() + f.n_sink * d.dv(), d.dv(), parts + 1, p);
    for (int32_t i : lagkv::top_k_per_partition(s, f.lag, k)) out.push_back(static_cast<int32_t>(f.n_sink + i));
  }
  for (int64_t i = std::max<int64_t>(f.n_sink, f.n_sink + parts * f.lag); i < seen; ++i) out.push_back(static_cast<int32_t>(i));
  return out;
}

// Appends with `chunk(step)` tokens per step, calling triggers/compress after each like the
// pipeline, and checks the layout, the tail, the size bound and the kept rows every step.
void drive(const Flow& f, const std::function<int64_t(int)>& chunk, int64_t total) {
  Driver d;
  auto press = make_press("lagkv", {"mode=lagkv", "n_sink=" + std::to_string(f.n_sink), "lag_size=" + std::to_string(f.lag)});
  Budget budget;
  budget.ratio = f.ratio;
  const int64_t k = lagkv::keep_per_partition(f.ratio, f.lag);
  int compressions = 0;
  for (int step = 0; d.seen < total; ++step) {
    d.append(std::min<int64_t>(chunk(step), total - d.seen));
    {
      const LayerView v = d.view();
      press->observe(v);
      if (press->triggers(v)) {
        press->compress(v, budget, d.cache);
        ++compressions;
      }
    }
    EXPECT_FALSE(press->triggers(d.view())) << "seen " << d.seen;
    for (int64_t h = 0; h < d.hkv(); ++h) {
      int64_t parts = 0;
      const auto want = expected_positions(d, h, f, &parts);
      const auto got = d.positions(h);
      ASSERT_EQ(got, want) << "seen " << d.seen << " head " << h;
      const int64_t tail = d.seen - f.n_sink - parts * f.lag;
      if (d.seen >= f.n_sink + 2 * f.lag) {
        EXPECT_GE(tail, f.lag);
        EXPECT_LE(tail, 2 * f.lag - 1);
      }
      const auto len = static_cast<int64_t>(got.size());
      EXPECT_EQ(len, std::min<int64_t>(f.n_sink, d.seen) + parts * k + std::max<int64_t>(0, tail));
      // docs/METHODS.md §2.2: n_sink + keep (seen - n_sink - tail) + tail, keep = k / lag <= 1 - cr.
      if (d.seen > f.n_sink) {
        EXPECT_LE(static_cast<double>(len), static_cast<double>(f.n_sink) + (1.0 - f.ratio) * static_cast<double>(d.seen - f.n_sink - tail) +
                                                 static_cast<double>(tail) + 1e-9);
      }
      // The rows moved with their positions.
      const auto keys = d.view().keys(h);
      const auto vals = d.view().values(h);
      for (size_t j = 0; j < got.size(); ++j)
        for (int64_t c = 0; c < d.dk(); ++c)
          ASSERT_EQ(keys[j * static_cast<size_t>(d.dk()) + static_cast<size_t>(c)],
                    d.k_hist[static_cast<size_t>(h)][static_cast<size_t>(got[j] * d.dk() + c)]);
      for (size_t j = 0; j < got.size(); ++j)
        ASSERT_EQ(vals[j * static_cast<size_t>(d.dv()) + 0], d.v_hist[static_cast<size_t>(h)][static_cast<size_t>(got[j] * d.dv())]);
    }
  }
  EXPECT_GT(compressions, 0);
}

}  // namespace

TEST(LagKvFlow, TokenByToken) {
  drive({4, 8, 0.5}, [](int) { return 1; }, 4 + 8 * 9 + 5);
}

TEST(LagKvFlow, PipelineSchedule) {
  // The README schedule: the first chunk is n_sink + 2 lag, then lag-sized chunks.
  const Flow f{16, 12, 0.8};
  drive(f, [&](int step) { return step == 0 ? f.n_sink + 2 * f.lag : f.lag; }, 16 + 12 * 11 + 7);
}

TEST(LagKvFlow, UnevenChunks) {
  // One large chunk compresses several partitions at once; later ones fewer or none.
  drive({4, 8, 0.75}, [](int step) { return step == 0 ? 61 : 3 + (step % 5) * 4; }, 4 + 8 * 20 + 3);
}

TEST(LagKvFlow, AnotherPressCompacting) {
  // A wrapper (or another press) compacts the layer and reports it through compacted(): the
  // compressed prefix shrinks with it and the next LagKV compression continues after it.
  Driver d;
  const Flow f{4, 8, 0.5};
  auto press = make_press("lagkv", {"mode=lagkv", "n_sink=4", "lag_size=8"});
  Budget budget;
  budget.ratio = f.ratio;
  d.append(f.n_sink + 3 * f.lag);
  press->compress(d.view(), budget, d.cache);  // 2 partitions scored: prefix 4 + 2x4, tail 8
  ASSERT_EQ(d.positions(0).size(), static_cast<size_t>(4 + 8 + 8));
  KeepSets drop(static_cast<size_t>(d.hkv()));  // drop slot 5 (in the kept prefix) of every head
  for (auto& k : drop)
    for (int32_t i = 0; i < 20; ++i)
      if (i != 5) k.push_back(i);
  const auto before = d.positions(0);
  compact_layer(d.cache, 0, drop);
  press->compacted(0, drop);
  EXPECT_FALSE(press->triggers(d.view()));
  d.append(f.lag);  // the tail reaches 2 lag: one more partition is scored
  ASSERT_TRUE(press->triggers(d.view()));
  const auto kept = press->compress(d.view(), budget, d.cache);
  const auto after = d.positions(0);
  ASSERT_EQ(after.size(), static_cast<size_t>(11 + 4 + 8));  // prefix, 4 selected, tail
  // The prefix (11 slots) is untouched, then 4 of the old tail's first partition, then the new tail.
  for (size_t j = 0; j < 11; ++j) EXPECT_EQ(after[j], before[j < 5 ? j : j + 1]);
  for (size_t j = 11; j < 15; ++j) {
    EXPECT_GE(after[j], 4 + 2 * 8);
    EXPECT_LT(after[j], 4 + 3 * 8);
  }
  for (size_t j = 15; j < after.size(); ++j) EXPECT_EQ(after[j], static_cast<int32_t>(4 + 3 * 8 + (j - 15)));
  EXPECT_EQ(kept[0].size(), after.size());
}

TEST(LagKvFlow, NewContextStartsOver) {
  const Flow f{4, 8, 0.5};
  auto press = make_press("lagkv", {"mode=lagkv", "n_sink=4", "lag_size=8"});
  Budget budget;
  budget.ratio = f.ratio;
  {
    Driver d;
    d.append(4 + 5 * 8);
    press->compress(d.view(), budget, d.cache);
    ASSERT_EQ(d.positions(0).size(), static_cast<size_t>(4 + 4 * 4 + 8));
  }
  Driver fresh;  // a new, uncompressed context: the prefix is the sinks again
  fresh.append(4 + 2 * 8);
  EXPECT_TRUE(press->triggers(fresh.view()));
  press->compress(fresh.view(), budget, fresh.cache);
  int64_t parts = 0;
  EXPECT_EQ(fresh.positions(1), expected_positions(fresh, 1, f, &parts));
  EXPECT_EQ(parts, 1);
}

TEST(LagKvPress, ShortSequences) {
  // kvpress mode below n_sink + 2 lag: keep_all keeps everything; streaming keeps the sinks and
  // the most recent slots (kvpress's ramp under the uniform budget).
  Driver d;
  d.append(40);
  Budget budget;
  budget.ratio = 0.5;
  auto keep_all = make_press("lagkv", {"lag_size=32"});
  const auto all = keep_all->select(d.view(), budget);
  EXPECT_EQ(all[0].size(), 40u);
  auto streaming = make_press("lagkv", {"lag_size=32", "short_sequence=streaming"});
  const auto s = streaming->select(d.view(), budget);
  std::vector<int32_t> want = {0, 1, 2, 3};
  for (int32_t i = 40 - 16; i < 40; ++i) want.push_back(i);
  EXPECT_EQ(s[2], want);
  // The LagKV repository does nothing below b + 2 lag either, and never triggers.
  auto lag = make_press("lagkv", {"mode=lagkv", "lag_size=32"});
  EXPECT_FALSE(lag->triggers(d.view()));
  EXPECT_EQ(lag->select(d.view(), budget)[0].size(), 40u);
}

TEST(LagKvPress, KvpressModeOneShot) {
  // kvpress mode on a long run: sinks, the newest full partition and the remainder protected,
  // the rest scored by within-partition rank; never triggers by itself.
  Driver d;
  d.append(4 + 8 * 6 + 3);
  auto press = make_press("lagkv", {"lag_size=8"});
  EXPECT_FALSE(press->triggers(d.view()));
  const auto scores = press->score(d.view());
  const auto& s = scores[1];
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(std::isinf(s[static_cast<size_t>(i)]));
  for (int i = 4 + 5 * 8; i < 4 + 8 * 6 + 3; ++i) EXPECT_TRUE(std::isinf(s[static_cast<size_t>(i)]));
  lagkv::Params p;
  p.lag = 8;
  p.ranks = true;
  const auto want = lagkv::region_scores(d.k_hist[1].data() + 4 * d.dk(), d.dk(), d.v_hist[1].data() + 4 * d.dv(), d.dv(), 6, p);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(s[4 + i], want[i]);
}

TEST(LagKvPress, Options) {
  EXPECT_THROW(make_press("lagkv", {"mode=h2o"}), Error);
  EXPECT_THROW(make_press("lagkv", {"lag_size=0"}), Error);
  Driver d;
  d.append(40);
  auto press = make_press("lagkv", {"mode=lagkv", "lag_size=8", "n_sink=4"});
  Budget tokens;
  tokens.tokens = 10;
  EXPECT_THROW(press->select(d.view(), tokens), Error);
  // Nothing to compress (fewer than 2 lag past the prefix): an absolute budget keeps everything.
  auto idle = make_press("lagkv", {"mode=lagkv", "lag_size=32", "n_sink=4"});
  EXPECT_EQ(idle->select(d.view(), tokens)[0].size(), 40u);
  // n_sink=-1: 16 sinks in LagKV mode (its repository's default), so 40 < 16 + 2*16 keeps all.
  auto sinks16 = make_press("lagkv", {"mode=lagkv", "lag_size=16"});
  EXPECT_FALSE(sinks16->triggers(d.view()));
  auto sinks4 = make_press("lagkv", {"mode=lagkv", "lag_size=16", "n_sink=4"});
  EXPECT_TRUE(sinks4->triggers(d.view()));
}

// LagKV's flow inside a real prefill: chunks of lag tokens, each layer compressed right after its
// attention whenever the press triggers (as the pipeline does), then decode steps. Later chunks
// attend to the compressed cache, so only the layout and the sizes are checked here.
TEST(LagKvFlow, ChunkedPrefillAndDecodeOnStories) {
  auto model = Model::load(test_paths::stories260k());
  SessionOptions o;
  o.kv_type_k = o.kv_type_v = KvType::F32;
  o.chunk = 16;
  o.threads = 1;
  Session session(*model, o);
  auto press = make_press("lagkv", {"mode=lagkv", "n_sink=4", "lag_size=16"});
  Budget budget;
  budget.ratio = 0.75;
  int compressions = 0;
  session.set_layer_hook([&](const LayerStats& st, KvCache& cache) {
    const LayerView view(*model, st.layer, cache, st);
    press->observe(view);
    if (press->triggers(view)) compressions += compress_layer(*press, view, budget, cache) > 0;
  });
  std::vector<int32_t> ids = {1};
  for (int i = 1; i < 120; ++i) ids.push_back(static_cast<int32_t>(260 + (i * 37) % 200));
  session.eval(ids);
  for (int step = 0; step < 30; ++step) session.eval({static_cast<int32_t>(300 + step)});
  session.set_layer_hook(nullptr);
  EXPECT_GT(compressions, 0);
  const int64_t seen = 150, lag = 16, k = 4;
  const int64_t parts = (seen - 4) / lag - 1, tail = seen - 4 - parts * lag;
  for (int64_t l = 0; l < model->config().n_layer; ++l)
    for (int64_t h = 0; h < model->config().n_head_kv; ++h) {
      const auto p = session.cache().positions(l, h);
      ASSERT_EQ(static_cast<int64_t>(p.size()), 4 + parts * k + tail) << "layer " << l << " head " << h;
      for (int32_t i = 0; i < 4; ++i) EXPECT_EQ(p[static_cast<size_t>(i)], i);
      for (int64_t c = 0; c < parts; ++c)  // k slots from each scored partition
        for (int64_t j = 0; j < k; ++j) {
          const int32_t pos = p[static_cast<size_t>(4 + c * k + j)];
          EXPECT_GE(pos, 4 + c * lag);
          EXPECT_LT(pos, 4 + (c + 1) * lag);
        }
      for (int64_t j = 0; j < tail; ++j) EXPECT_EQ(p[static_cast<size_t>(4 + parts * k + j)], seen - tail + j);
    }
}
