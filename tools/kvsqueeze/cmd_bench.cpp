// kvsqueeze bench: prefill and decode speed at given context lengths (random token ids, as
// llama-bench does), with the KV bytes held and peak RSS.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "commands.h"
#include "kernels/threading.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/generation.h"
#include "kvsqueeze/model.h"

namespace kvsqueeze::cli {
namespace {

struct BenchArgs {
  std::string model, ctx_list = "512", kv_type = "f16";
  int64_t n_decode = 64, chunk = 512;
  int threads = 0;
  uint64_t seed = 42;
  bool json = false;
};

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& flag) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v <= 0) throw Error(flag + " expects a comma-separated list of positive integers, got '" + text + "'");
    out.push_back(v);
  }
  if (out.empty()) throw Error(flag + " is empty");
  return out;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

int run(const BenchArgs& a) {
  const auto contexts = parse_int_list(a.ctx_list, "--ctx");
  if (a.n_decode < 1) throw Error("-n must be >= 1");
  auto model = Model::load(a.model);
  const ModelConfig& cfg = model->config();
  nlohmann::json results = nlohmann::json::array();
  std::mt19937 rng(static_cast<uint32_t>(a.seed));
  std::uniform_int_distribution<int32_t> any_token(0, static_cast<int32_t>(cfg.n_vocab - 1));
  for (int64_t ctx : contexts) {
    if (ctx + a.n_decode > cfg.n_ctx_train)
      throw Error("--ctx " + std::to_string(ctx) + " plus -n " + std::to_string(a.n_decode) + " exceeds the model's context " +
                  std::to_string(cfg.n_ctx_train));
    SessionOptions so;
    so.ctx_size = ctx + a.n_decode;
    so.chunk = a.chunk;
    so.threads = a.threads;
    so.kv_type = parse_kv_type(a.kv_type);
    Session session(*model, so);
    std::vector<int32_t> prompt(static_cast<size_t>(ctx));
    for (auto& id : prompt) id = any_token(rng);
    auto t0 = std::chrono::steady_clock::now();
    std::vector<float> logits = session.eval(prompt);
    const double prefill_ms = ms_since(t0);
    t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < a.n_decode; ++i) logits = session.eval({argmax(logits)});
    const double decode_ms = ms_since(t0);
    nlohmann::json r = {{"ctx", ctx},
                        {"prefill_ms", prefill_ms},
                        {"prefill_tok_s", ctx * 1000.0 / prefill_ms},
                        {"decode_tokens", a.n_decode},
                        {"decode_ms", decode_ms},
                        {"decode_tok_s", a.n_decode * 1000.0 / decode_ms},
                        {"kv_bytes_held", session.cache().bytes_held()},
                        {"kv_bytes_full", session.kv_bytes_full()},
                        {"peak_rss_bytes", peak_rss_bytes()}};
    results.push_back(r);
    if (!a.json)
      std::printf("ctx %6lld  prefill %8.1f tok/s  decode %7.2f tok/s (%.2f ms/token)  kv held %.1f MiB\n", (long long)ctx,
                  r["prefill_tok_s"].get<double>(), r["decode_tok_s"].get<double>(), decode_ms / a.n_decode,
                  session.cache().bytes_held() / 1048576.0);
  }
  if (a.json) {
    nlohmann::json j = {{"model", a.model}, {"threads", kernels::num_threads()}, {"kv_type", a.kv_type}, {"results", results}};
    std::cout << j.dump() << "\n";
  }
  return 0;
}

}  // namespace

Runner add_bench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* sub = app.add_subcommand("bench", "Measure prefill and decode speed at given context lengths");
  sub->add_option("-m,--model", a->model, "GGUF model file")->required();
  sub->add_option("--ctx", a->ctx_list, "Comma-separated context lengths (prompt tokens)")->capture_default_str();
  sub->add_option("-n,--n-decode", a->n_decode, "Tokens decoded after each prefill")->capture_default_str();
  sub->add_option("--chunk", a->chunk, "Prefill chunk size")->capture_default_str();
  sub->add_option("-t,--threads", a->threads, "Threads (0: one per core)")->capture_default_str();
  sub->add_option("--kv-type", a->kv_type, "KV cache element type: f16, bf16, f32")->capture_default_str();
  sub->add_option("--seed", a->seed, "Seed of the random prompt")->capture_default_str();
  sub->add_flag("--json", a->json, "Print one JSON object");
  return [a] { return run(*a); };
}

}  // namespace kvsqueeze::cli
