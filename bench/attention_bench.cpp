// Micro-benchmarks of decode attention over one layer of a cache of each KV type, on the
// default model's shape (Qwen2.5-0.5B: 14 query heads over 2 KV heads of 64), at long context.
// Names: attention_decode/<type>/<slots>/th<threads>. Counters: GB/s of KV bytes held read per
// step, and ms per step for the model's 24 layers (x24, what one decoded token spends here).
//
//   build/bench/kvsq_microbench --benchmark_filter='attention_decode'
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kvsqueeze/kv_cache.h"

using namespace kvsqueeze;

namespace {

constexpr int64_t kHeads = 14, kKvHeads = 2, kDim = 64, kLayers = 24;

KvCache make_cache(KvType type, int64_t slots) {
  KvCacheShape s;
  s.n_layer = 1;
  s.n_head_kv = kKvHeads;
  s.head_dim_k = kDim;
  s.head_dim_v = kDim;
  s.k_type = type;
  s.v_type = type;
  s.k_rotated = kv_keys_rotated(KvTransform::Auto, type);
  s.v_rotated = kv_rows_rotated(KvTransform::Auto, type);
  s.k_centered = kv_keys_centered(KvTransform::Auto, type);
  KvCache cache(s, slots);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  constexpr int64_t kChunk = 1024;
  std::vector<float> k(static_cast<size_t>(kChunk * kKvHeads * kDim)), v(k.size());
  std::vector<int32_t> pos(kChunk);
  for (int64_t t0 = 0; t0 < slots; t0 += kChunk) {
    const int64_t n = std::min(kChunk, slots - t0);
    for (auto& x : k) x = normal(rng);
    for (auto& x : v) x = normal(rng);
    for (int64_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(t0 + i);
    cache.append(0, n, k.data(), v.data(), pos.data());
  }
  return cache;
}

void BM_AttentionDecode(benchmark::State& state, KvType type) {
  const int64_t slots = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  omp_set_num_threads(threads);
  const KvCache cache = make_cache(type, slots);
  std::vector<KvRun> runs;
  for (int64_t h = 0; h < kKvHeads; ++h) runs.push_back(cache.run(0, h));
  std::vector<float> q(kHeads * kDim, 0.1f), out(kHeads * kDim);
  const int32_t q_pos = static_cast<int32_t>(slots);
  const AttentionShape shape{kHeads, kKvHeads, kDim, kDim, 0.125f, 0};
  for (auto _ : state) {
    kernels::attention(shape, q.data(), &q_pos, 1, runs.data(), out.data(), nullptr);
    benchmark::DoNotOptimize(out.data());
  }
  const double bytes = static_cast<double>(cache.bytes_used());
  state.counters["GB/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["ms_x24"] = benchmark::Counter(1.0 / (1e3 * kLayers), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void register_all() {
  for (KvType t : {KvType::F16, KvType::Q8_0, KvType::Q4_0, KvType::KIVI2}) {
    auto* b = benchmark::RegisterBenchmark((std::string("attention_decode/") + kv_type_name(t)).c_str(), BM_AttentionDecode, t);
    b->ArgNames({"slots", "th"})->Unit(benchmark::kMillisecond)->UseRealTime();
    for (int64_t slots : {4096, 32768})
      for (int th : {1, 2}) b->Args({slots, th});
  }
}

const int registered = (register_all(), 0);

}  // namespace
