// GPU benchmark (scripts/gpu/check.sh), figures printed as JSON lines and as ratios in one run:
//   kvsq_cuda_bench kernels
//     device-to-device copy bandwidth, then the decode attention kernel (one query over ragged
//     f16 runs) on Qwen2.5-0.5B-shaped and Llama-3.1-8B-shaped layers at 4K and 32K slots with
//     all, half and a quarter of the slots kept: bytes held / time, as a fraction of the copy's.
//   kvsq_cuda_bench model FILE [--device cuda|cpu] [--ctx 4096,32768] [--ratios 0,0.5,0.75]
//                   [--press expected_attention] [--decode 64] [--chunk 2048] [--label NAME]
//     prefill and decode tok/s of the engine with the press at each ratio, and the KV bytes held.
#include <cuda_runtime_api.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cuda/ragged_attention.h"
#include "kvsqueeze/engine.h"
#include "kvsqueeze/error.h"

namespace kc = kvsqueeze::kernels::cuda;

namespace {

void ok(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw kvsqueeze::Error(std::string(what) + ": " + cudaGetErrorString(err));
}

struct Timer {  // CUDA events around work queued on the default stream
  cudaEvent_t a{}, b{};
  Timer() {
    ok(cudaEventCreate(&a), "event");
    ok(cudaEventCreate(&b), "event");
  }
  ~Timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  void start() { ok(cudaEventRecord(a, nullptr), "record"); }
  double stop_ms() {
    ok(cudaEventRecord(b, nullptr), "record");
    ok(cudaEventSynchronize(b), "sync");
    float ms = 0;
    ok(cudaEventElapsedTime(&ms, a, b), "elapsed");
    return ms;
  }
};

// Bytes read plus written per second by cudaMemcpy between two 1 GiB buffers.
double copy_bandwidth() {
  const size_t bytes = size_t{1} << 30;
  void *x = nullptr, *y = nullptr;
  ok(cudaMalloc(&x, bytes), "malloc");
  ok(cudaMalloc(&y, bytes), "malloc");
  ok(cudaMemset(x, 1, bytes), "memset");
  for (int i = 0; i < 3; ++i) ok(cudaMemcpy(y, x, bytes, cudaMemcpyDeviceToDevice), "copy");
  Timer t;
  const int reps = 20;
  t.start();
  for (int i = 0; i < reps; ++i) ok(cudaMemcpyAsync(y, x, bytes, cudaMemcpyDeviceToDevice, nullptr), "copy");
  const double ms = t.stop_ms();
  cudaFree(x);
  cudaFree(y);
  return 2.0 * static_cast<double>(bytes) * reps / (ms / 1e3);
}

struct Shape {
  const char* name;
  int n_layer, n_head, n_head_kv, head_dim;
};

// One query's attention over every layer's runs in turn (so the runs come from memory, not L2).
nlohmann::json attention_bandwidth(const Shape& s, int64_t slots, double kept, double copy_bw, int sm_count) {
  const int64_t len = static_cast<int64_t>(static_cast<double>(slots) * kept);
  const size_t row = static_cast<size_t>(s.head_dim) * 2;  // f16
  const size_t layer_bytes = static_cast<size_t>(s.n_head_kv) * static_cast<size_t>(len) * (2 * row + 4);
  // At least 512 MiB of runs in rotation: ten times the L2 of an H100/H200.
  int layers = s.n_layer;
  while (static_cast<size_t>(layers) * layer_bytes < (size_t{512} << 20)) layers += s.n_layer;
  std::vector<void*> blocks;
  std::vector<kc::RunTable> tables(static_cast<size_t>(layers));
  std::vector<int32_t> pos(static_cast<size_t>(len));
  for (int64_t i = 0; i < len; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  for (int l = 0; l < layers; ++l) {
    kc::RunTable& t = tables[static_cast<size_t>(l)];
    t.count = s.n_head_kv;
    t.k_type = t.v_type = kc::RowType::F16;
    t.head_dim_k = t.head_dim_v = s.head_dim;
    for (int h = 0; h < s.n_head_kv; ++h) {
      void *k = nullptr, *v = nullptr, *p = nullptr;
      ok(cudaMalloc(&k, row * static_cast<size_t>(len)), "malloc");
      ok(cudaMalloc(&v, row * static_cast<size_t>(len)), "malloc");
      ok(cudaMalloc(&p, 4 * static_cast<size_t>(len)), "malloc");
      ok(cudaMemset(k, 0x2c, row * static_cast<size_t>(len)), "memset");  // small f16 values
      ok(cudaMemset(v, 0x2c, row * static_cast<size_t>(len)), "memset");
      ok(cudaMemcpy(p, pos.data(), 4 * static_cast<size_t>(len), cudaMemcpyHostToDevice), "copy");
      blocks.insert(blocks.end(), {k, v, p});
      t.run[h] = kc::DeviceRun{k, v, static_cast<int32_t*>(p), nullptr, nullptr, len, s.head_dim};
    }
  }
  float *q = nullptr, *out = nullptr, *scratch = nullptr;
  int32_t* q_pos = nullptr;
  const int64_t splits = kc::attention_splits(1, s.n_head_kv, len, sm_count);
  ok(cudaMalloc(reinterpret_cast<void**>(&q), sizeof(float) * static_cast<size_t>(s.n_head * s.head_dim)), "malloc");
  ok(cudaMemset(q, 0, sizeof(float) * static_cast<size_t>(s.n_head * s.head_dim)), "memset");
  ok(cudaMalloc(reinterpret_cast<void**>(&out), sizeof(float) * static_cast<size_t>(s.n_head * s.head_dim)), "malloc");
  ok(cudaMalloc(reinterpret_cast<void**>(&scratch), sizeof(float) * kc::attention_scratch_floats(1, s.n_head, splits, s.head_dim)), "malloc");
  ok(cudaMalloc(reinterpret_cast<void**>(&q_pos), sizeof(int32_t)), "malloc");
  const int32_t query_pos = static_cast<int32_t>(slots);
  ok(cudaMemcpy(q_pos, &query_pos, sizeof(int32_t), cudaMemcpyHostToDevice), "copy");
  kc::AttentionArgs args;
  args.n_head = s.n_head;
  args.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  for (int l = 0; l < layers; ++l) ok(kc::attention(args, tables[static_cast<size_t>(l)], q, q_pos, 1, len, sm_count, out, nullptr, scratch, nullptr), "warm-up");
  Timer t;
  const int rounds = 5;
  t.start();
  for (int r = 0; r < rounds; ++r)
    for (int l = 0; l < layers; ++l)
      ok(kc::attention(args, tables[static_cast<size_t>(l)], q, q_pos, 1, len, sm_count, out, nullptr, scratch, nullptr), "attention");
  const double ms = t.stop_ms();
  for (void* b : blocks) cudaFree(b);
  cudaFree(q);
  cudaFree(out);
  cudaFree(scratch);
  cudaFree(q_pos);
  const double per_layer_us = ms * 1e3 / (rounds * layers);
  const double bw = static_cast<double>(layer_bytes) / (per_layer_us / 1e6);
  return {{"bench", "decode_attention"}, {"shape", s.name}, {"slots", slots}, {"kept", kept}, {"held_bytes_per_layer", layer_bytes},
          {"us_per_layer", per_layer_us}, {"gb_s", bw / 1e9}, {"fraction_of_copy", bw / copy_bw}, {"splits", splits}};
}

int run_kernels() {
  int sm_count = 0;
  ok(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, 0), "attribute");
  cudaDeviceProp prop{};
  ok(cudaGetDeviceProperties(&prop, 0), "properties");
  const double copy_bw = copy_bandwidth();
  std::printf("%s\n", nlohmann::json{{"bench", "copy"}, {"device", prop.name}, {"gb_s_read_plus_written", copy_bw / 1e9}}.dump().c_str());
  const Shape shapes[] = {{"qwen2.5-0.5b", 24, 14, 2, 64}, {"llama3.1-8b", 32, 32, 8, 128}};
  for (const Shape& s : shapes)
    for (int64_t slots : {int64_t{4096}, int64_t{32768}})
      for (double kept : {1.0, 0.5, 0.25}) std::printf("%s\n", attention_bandwidth(s, slots, kept, copy_bw, sm_count).dump().c_str());
  return 0;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

int run_model(int argc, char** argv) {
  if (argc < 3) throw kvsqueeze::Error("usage: kvsq_cuda_bench model FILE [options]");
  std::string file = argv[2], device = "cuda", ctx = "4096,32768", ratios = "0,0.5,0.75", press = "expected_attention", label;
  int64_t decode = 64, chunk = 2048;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--device") device = value;
    else if (flag == "--ctx") ctx = value;
    else if (flag == "--ratios") ratios = value;
    else if (flag == "--press") press = value;
    else if (flag == "--decode") decode = std::stoll(value);
    else if (flag == "--chunk") chunk = std::stoll(value);
    else if (flag == "--label") label = value;
    else throw kvsqueeze::Error("unknown option " + flag);
  }
  auto model = kvsqueeze::Model::load(file);
  const int64_t vocab = model->config().n_vocab;
  for (const std::string& c : split_list(ctx)) {
    const int64_t n = std::stoll(c);
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>(1 + (i * 7919 + 13) % (vocab - 1));
    for (const std::string& r : split_list(ratios)) {
      kvsqueeze::SessionOptions so;
      so.device = kvsqueeze::parse_device(device);
      so.ctx_size = n + decode + 16;
      so.chunk = chunk;
      kvsqueeze::Engine engine(*model, so);
      kvsqueeze::CompressionPlan plan;
      plan.ratio = std::stod(r);
      plan.press = plan.ratio > 0 ? press : "none";
      engine.set_plan(plan);
      kvsqueeze::GenerateParams params;
      params.max_tokens = decode;
      params.ignore_eos = true;
      engine.prefill_context(ids);  // compressed as planned
      const kvsqueeze::Accounting held = engine.accounting();
      const kvsqueeze::Completion done = engine.generate({}, params);  // continues the context
      std::printf("%s\n", nlohmann::json{{"engine", "kvsqueeze"},
                                         {"device", device},
                                         {"model", label.empty() ? file : label},
                                         {"context", n},
                                         {"ratio", plan.ratio},
                                         {"press", plan.press},
                                         {"prefill_tok_s", done.timings.prefill_tok_s()},
                                         {"decode_tok_s", done.timings.decode_tok_s()},
                                         {"decode_tokens", done.timings.generated_tokens},
                                         {"kv_bytes_held", held.kv_bytes_held},
                                         {"kv_bytes_full", held.kv_bytes_full}}
                                  .dump()
                                  .c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "model") return run_model(argc, argv);
    if (mode == "kernels") {
      if (!kvsqueeze::device_available(kvsqueeze::Device::Cuda)) {
        std::fprintf(stderr, "kvsq_cuda_bench: no CUDA device\n");
        return 2;
      }
      return run_kernels();
    }
    std::fprintf(stderr, "usage: kvsq_cuda_bench kernels | model FILE [--device cuda|cpu] [--ctx N,..] [--ratios R,..] "
                         "[--press EXPR] [--decode N] [--chunk N] [--label NAME]\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvsq_cuda_bench: %s\n", e.what());
    return 1;
  }
}
