// Micro-benchmarks of kernels::matmul on the weight shapes of Gemma-3-270M and Qwen2.5-0.5B.
// Names: matmul/<type>/<cols>x<rows>/t<n_tokens>/th<threads>. Counters: GFLOPS (2*rows*cols*
// n_tokens per second) and GB/s of weight bytes read (meaningful for decode: n_tokens = 1, and the
// 4..16 tokens of a server's batched decode step, which should cost little more than 1).
//
//   build-kernels/bench/kvsq_microbench --benchmark_filter='matmul/Q4_K'
//   KVSQ_BENCH_ALL_TYPES=1 ...   also runs every type on the Qwen shapes (else a representative set)
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "random_weights.h"

using namespace kvsqueeze;
using namespace kvsqueeze::kernels;
using namespace kvsqueeze::bench;

namespace {

// One cached random matrix per shape (at most 4 kept: the LM head alone is 178 MB).
const RandomWeights& weights(TensorType t, int64_t rows, int64_t cols) {
  static std::map<std::tuple<int, int64_t, int64_t>, std::unique_ptr<RandomWeights>> cache;
  auto key = std::make_tuple(static_cast<int>(t), rows, cols);
  auto& slot = cache[key];
  if (slot) return *slot;
  if (cache.size() > 3) {
    for (auto it = cache.begin(); it != cache.end();) it = it->first == key ? std::next(it) : cache.erase(it);
  }
  slot = std::make_unique<RandomWeights>();
  fill_random_weights(*slot, t, rows, cols);
  return *slot;
}

void bm_matmul(benchmark::State& state, TensorType t, int64_t rows, int64_t cols, int64_t tokens, int threads) {
  const auto& W = weights(t, rows, cols);
  std::vector<float> x(static_cast<size_t>(tokens * cols));
  for (auto& v : x) v = static_cast<float>(static_cast<int64_t>(next_rand() % 2001) - 1000) / 1000.0f;
  std::vector<float> y(static_cast<size_t>(tokens * rows));
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  matmul(W.w, x.data(), tokens, y.data());  // warm-up (scratch allocation, page faults)
  for (auto _ : state) {
    matmul(W.w, x.data(), tokens, y.data());
    benchmark::ClobberMemory();
  }
  omp_set_num_threads(saved);
  const double flops = 2.0 * static_cast<double>(rows) * static_cast<double>(cols) * static_cast<double>(tokens);
  state.counters["GFLOPS"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s"] =
      benchmark::Counter(static_cast<double>(W.data.size()) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

struct Shape {
  TensorType type;
  int64_t cols, rows;  // GGUF order: ne0 = cols (input features), ne1 = rows (outputs)
};

int register_all() {
  std::vector<Shape> shapes = {
      // Gemma-3-270M (Q4_K_M file): attn_q, attn_output, ffn_up/gate, ffn_down, LM head (token_embd)
      {TensorType::Q5_0, 640, 1024}, {TensorType::Q4_K, 1024, 640},   {TensorType::Q5_0, 640, 2048},
      {TensorType::Q6_K, 2048, 640}, {TensorType::Q8_0, 640, 262144},
  };
  const bool all = std::getenv("KVSQ_BENCH_ALL_TYPES") != nullptr;
  std::vector<TensorType> qwen_types =
      all ? std::vector<TensorType>{TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1,
                                    TensorType::Q8_0, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K,
                                    TensorType::F16,  TensorType::BF16, TensorType::F32}
          : std::vector<TensorType>{TensorType::Q4_0, TensorType::Q8_0, TensorType::Q4_K, TensorType::Q6_K,
                                    TensorType::F16};
  // Qwen2.5-0.5B: attn_q/o (896x896), ffn_up/gate (896 -> 4864), ffn_down (4864 -> 896)
  for (auto t : qwen_types)
    for (auto [c, r] : {std::pair<int64_t, int64_t>{896, 896}, {896, 4864}, {4864, 896}}) {
      if (layout_of(t).elems == 256 && c % 256 != 0) continue;  // 896 is not a K-quant row length
      shapes.push_back({t, c, r});
    }
  for (const auto& s : shapes)
    for (int64_t tokens : {1, 4, 8, 16, 512})
      for (int threads : {1, 2}) {
        if (s.rows >= 100000 && tokens > 1 && threads == 1) continue;  // LM head prefill: 2 threads only
        if (tokens > 1 && tokens < 512 && threads == 1) continue;       // a server's decode batches: 2 threads
        const std::string name = std::string("matmul/") + name_of(s.type) + "/" + std::to_string(s.cols) + "x" +
                                 std::to_string(s.rows) + "/t" + std::to_string(tokens) + "/th" +
                                 std::to_string(threads);
        auto* b = benchmark::RegisterBenchmark(name.c_str(), bm_matmul, s.type, s.rows, s.cols, tokens, threads);
        b->UseRealTime()->Unit(benchmark::kMicrosecond);
        if (s.rows >= 100000 && tokens > 1) b->Iterations(2);
      }
  return 0;
}
const int registered = register_all();

}  // namespace
