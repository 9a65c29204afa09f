// One decode step's weight matmuls on the Qwen2.5-0.5B Q4_K_M shapes and types (24 layers of
// attn_q/k/v/o, ffn_gate/up/down, then the LM head), every matrix its own buffer (~330 MB), so
// that the weights stream from memory as in a real step instead of sitting in the last-level cache
// as the single-matrix benchmarks' do. t<N> is a server step of N sequences (one token each): the
// cost of N tokens against 1 is what batching buys. gguf: the file's layout; packed: with the
// load-time packed copies the CPU backend makes (kernels/weight_packing.h).
//
//   build/bench/kvsq_microbench --benchmark_filter='decode_step'
#include <benchmark/benchmark.h>
#include <omp.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/panel_packing.h"
#include "kernels/weight_packing.h"
#include "random_weights.h"

using namespace kvsqueeze;
using namespace kvsqueeze::bench;

namespace {

struct Matrix {
  TensorType type;
  int64_t cols, rows;
};

// The types llama.cpp's Q4_K_M recipe gives this model (as in the real file): 896 is not a K-quant
// row length, so the 896-wide matrices fall back to Q5_0; the "more bits" layers (the first and last
// eighth, every third between) get attn_v Q8_0 and ffn_down Q6_K, the others Q5_0 and Q4_K.
std::vector<Matrix> qwen05_step() {
  std::vector<Matrix> m;
  for (int layer = 0; layer < 24; ++layer) {
    const bool more_bits = layer < 3 || layer >= 21 || (layer - 3) % 3 == 2;
    m.push_back({TensorType::Q5_0, 896, 896});   // attn_q
    m.push_back({TensorType::Q5_0, 896, 128});   // attn_k
    m.push_back({more_bits ? TensorType::Q8_0 : TensorType::Q5_0, 896, 128});  // attn_v
    m.push_back({TensorType::Q5_0, 896, 896});   // attn_output
    m.push_back({TensorType::Q5_0, 896, 4864});  // ffn_gate
    m.push_back({TensorType::Q5_0, 896, 4864});  // ffn_up
    m.push_back({more_bits ? TensorType::Q6_K : TensorType::Q4_K, 4864, 896});  // ffn_down
  }
  m.push_back({TensorType::Q8_0, 896, 151936});  // LM head
  return m;
}

// The step's matrices as the CPU backend holds them: gguf (the file's layout), packed (row-packed
// copies where kernels::packing_pays) or panels (panel copies of Q4_0/Q5_0/Q8_0, kernels/panel_packing.h).
enum class Layout { Gguf, Packed, Panels };
const std::vector<std::unique_ptr<RandomWeights>>& step_weights(Layout layout) {
  static std::vector<std::unique_ptr<RandomWeights>> all;
  static std::vector<std::vector<uint8_t>> packed_copies, panel_copies;
  if (all.empty())
    for (const Matrix& m : qwen05_step()) {
      all.push_back(std::make_unique<RandomWeights>());
      fill_random_weights(*all.back(), m.type, m.rows, m.cols);
    }
  if (layout == Layout::Packed && packed_copies.empty())
    for (auto& w : all) {
      if (!kernels::packing_pays(w->w.type)) continue;
      packed_copies.emplace_back(w->data.size());
      kernels::pack_weights(w->w, packed_copies.back().data());
    }
  if (layout == Layout::Panels && panel_copies.empty())
    for (auto& w : all) {
      if (!kernels::panel_packable(w->w.type)) continue;
      panel_copies.emplace_back(kernels::panel_packed_bytes(w->w));
      kernels::pack_panels(w->w, panel_copies.back().data());
    }
  size_t i = 0, k = 0;
  for (auto& w : all) {
    w->w.packed = layout == Layout::Packed && kernels::packing_pays(w->w.type) ? packed_copies[i++].data() : nullptr;
    w->w.panels = layout == Layout::Panels && kernels::panel_packable(w->w.type) ? panel_copies[k++].data() : nullptr;
  }
  return all;
}

void bm_decode_step(benchmark::State& state, int64_t tokens, int threads, Layout layout, kernels::MatmulPath path) {
  const auto& all = step_weights(layout);
  std::vector<float> x(static_cast<size_t>(tokens * 4864)), y(static_cast<size_t>(tokens * 151936));
  for (auto& v : x) v = static_cast<float>(static_cast<int64_t>(next_rand() % 2001) - 1000) / 1000.0f;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  size_t bytes = 0;
  for (const auto& w : all) bytes += w->data.size();
  auto step = [&] {
    for (const auto& w : all) kernels::matmul(w->w, x.data(), tokens, y.data(), w->w.rows, path);
  };
  step();  // warm-up (scratch buffers)
  for (auto _ : state) {
    step();
    benchmark::ClobberMemory();
  }
  omp_set_num_threads(saved);
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tok/s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsIterationInvariantRate);
}

int register_all() {
  // by_count: the path matmul picks by the token count; rows: every token a one-token product (what a
  // server's decode step of N sequences runs, so that each gets its own numbers); panels: the prompt path.
  using P = kernels::MatmulPath;
  for (auto [layout, layout_name] : {std::pair{Layout::Gguf, "gguf"}, std::pair{Layout::Packed, "packed"}, std::pair{Layout::Panels, "panels"}})
    for (int64_t tokens : {1, 2, 3, 4, 6, 8, 12, 16})
      for (auto [path, label] : {std::pair{P::ByCount, "by_count"}, std::pair{P::Rows, "rows"}, std::pair{P::Panels, "panels"}}) {
        if (path != P::ByCount && (tokens < 4 || layout == Layout::Panels)) continue;  // panel copies: one path
        const std::string name = std::string("decode_step/qwen2.5-0.5b/") + layout_name + "/t" + std::to_string(tokens) +
                                 "/" + label + "/th2";
        benchmark::RegisterBenchmark(name.c_str(), bm_decode_step, tokens, 2, layout, path)->UseRealTime()->Unit(benchmark::kMillisecond);
      }
  return 0;
}
const int registered = register_all();

}  // namespace
