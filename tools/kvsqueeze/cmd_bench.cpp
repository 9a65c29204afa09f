// kvsqueeze bench: speed and memory of the engine.
//   Speed:  bench -m M --ctx 512,4096 -n 64            prefill and decode tok/s per context
//   Memory: bench -m M --ctx 4096,16384 --ratio 0,0.5,0.75,0.9
//           each context is prefilled once and saved as a prompt cache (reused on later runs);
//           each ratio then runs in a fresh process that loads the cache, compresses it with
//           --press (default streaming_llm: 4 sinks + the most recent slots), frees the slack
//           and decodes, so its decode time, bytes held and peak RSS belong to that ratio alone.
//   Bandwidth: bench -m M --ctx 512,4096 --bandwidth
//           the speed run, plus the machine's read bandwidth (1 thread and --threads) and, per
//           context, the bytes a decoded token reads (weights + the K/V in use), the decode speed
//           that bandwidth allows, and the share of it reached.
//   Press time: bench -m M --ctx 8192 --press knorm,snapkv,tova --ratio 0.5 --press-time
//           each press: the same context prefilled without and with the press; overhead and
//           time inside the press's calls (bench_press_time.cpp). --dump-ids FILE writes the
//           token ids (bench/bench_presses_kvpress.py feeds them to kvpress).
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "bench_common.h"
#include "bench_press_time.h"
#include "commands.h"
#include "device_flag.h"
#include "kv_type_flags.h"
#include "kvsqueeze/bandwidth.h"
#include "kvsqueeze/cache_file.h"
#include "kvsqueeze/engine.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/generation.h"
#include "kvsqueeze/kernels_isa.h"
#include "kvsqueeze/model.h"
#include "kvsqueeze/press.h"

namespace kvsqueeze::cli {
namespace {

struct BenchArgs {
  std::string model, ctx_list = "512", ratio_list, press = "streaming_llm", cache_dir, worker_cache;
  int64_t n_decode = 64, chunk = 512;
  int threads = 0;
  uint64_t seed = 42;
  double worker_ratio = 0.0;
  KvTypeFlags kv_types;
  DeviceFlag device;
  SessionOptions kv;  // the cache types and transforms of kv_types, resolved by run()
  bool json = false;
  bool press_time = false, press_given = false;
  bool bandwidth = false;
  PressTimeArgs pt;  // --press-time only options
};

std::vector<int32_t> random_prompt(const ModelConfig& cfg, int64_t n, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_int_distribution<int32_t> any_token(0, static_cast<int32_t>(cfg.n_vocab - 1));
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = any_token(rng);
  return ids;
}

// A context of ctx tokens followed by n_decode steps, needing `positions`, must fit the model.
void check_context(const ModelConfig& cfg, int64_t ctx, int64_t n_decode, int64_t positions) {
  if (positions > cfg.n_ctx_train)
    throw Error("--ctx " + std::to_string(ctx) + " plus -n " + std::to_string(n_decode) + " exceeds the model's context " +
                std::to_string(cfg.n_ctx_train));
}

// The cache types, and the transforms where they are not the default (file names, reports).
std::string kv_label(const SessionOptions& kv) {
  std::string label = kv_types_label(kv.kv_type_k, kv.kv_type_v);
  if (kv.kv_rotation != KvTransform::Auto) label += std::string("-rotation_") + kv_transform_name(kv.kv_rotation);
  if (kv.kv_centering != KvTransform::Auto) label += std::string("-centering_") + kv_transform_name(kv.kv_centering);
  return label;
}

SessionOptions session_options(const BenchArgs& a, int64_t ctx_size) {
  SessionOptions so = a.kv;
  so.ctx_size = ctx_size;
  so.chunk = a.chunk;
  so.threads = a.threads;
  return so;
}

// The machine's read bandwidth with one thread and with the kernels' threads (--bandwidth).
nlohmann::json probe_bandwidth(bool print) {
  const ReadBandwidth one = measure_read_bandwidth(size_t{1} << 30, 1), all = measure_read_bandwidth(size_t{1} << 30, kernels_threads());
  if (print)
    std::printf("read bandwidth  %.1f GB/s with 1 thread, %.1f GB/s with %d (fastest of %d passes over %.0f MiB)\n", one.gb_per_s,
                all.gb_per_s, all.threads, all.passes, all.bytes / 1048576.0);
  return {{"bytes", all.bytes}, {"passes", all.passes}, {"gb_per_s_1_thread", one.gb_per_s}, {"threads", all.threads},
          {"gb_per_s", all.gb_per_s}};
}

int run_speed(const BenchArgs& a, const Model& model) {
  const ModelConfig& cfg = model.config();
  nlohmann::json results = nlohmann::json::array();
  const nlohmann::json bandwidth = a.bandwidth ? probe_bandwidth(!a.json) : nlohmann::json();
  const size_t weight_bytes = weight_bytes_per_token(model);
  for (int64_t ctx : parse_int_list(a.ctx_list, "--ctx")) {
    check_context(cfg, ctx, a.n_decode, ctx + a.n_decode);
    Engine engine(model, session_options(a, ctx + a.n_decode));
    const double prefill_ms = engine.prefill_context(random_prompt(cfg, ctx, a.seed), a.n_decode);
    GenerateParams greedy;
    greedy.max_tokens = a.n_decode;
    greedy.ignore_eos = true;  // a fixed number of decode steps
    const size_t kv_before = engine.accounting().kv_bytes_used;
    const double decode_ms = engine.generate({}, greedy).timings.decode_ms;
    const Accounting held = engine.accounting();
    nlohmann::json r = {{"ctx", ctx},
                        {"prefill_ms", prefill_ms},
                        {"prefill_tok_s", ctx * 1000.0 / prefill_ms},
                        {"decode_tokens", a.n_decode},
                        {"decode_ms", decode_ms},
                        {"decode_tok_s", a.n_decode * 1000.0 / decode_ms},
                        {"kv_bytes_held", held.kv_bytes_held},
                        {"kv_bytes_full", held.kv_bytes_full},
                        {"peak_rss_bytes", peak_rss_bytes()}};
    if (a.bandwidth) {  // the K/V a step reads: what the cache uses, averaged over the decoded steps
      const double kv_per_token = (kv_before + held.kv_bytes_used) / 2.0;
      const double bound = bandwidth["gb_per_s"].get<double>() * 1e9 / (static_cast<double>(weight_bytes) + kv_per_token);
      r["weight_bytes_per_token"] = weight_bytes;
      r["kv_bytes_per_token"] = kv_per_token;
      r["bound_tok_s"] = bound;
      r["pct_of_bound"] = 100.0 * r["decode_tok_s"].get<double>() / bound;
    }
    results.push_back(r);
    if (!a.json)
      std::printf("ctx %6lld  prefill %8.1f tok/s  decode %7.2f tok/s (%.2f ms/token)  kv held %.1f MiB\n", (long long)ctx,
                  r["prefill_tok_s"].get<double>(), r["decode_tok_s"].get<double>(), decode_ms / a.n_decode,
                  held.kv_bytes_held / 1048576.0);
    if (!a.json && a.bandwidth)
      std::printf("            reads %.1f MB/token (weights %.1f + K/V %.1f): bound %.1f tok/s, %.0f%% of it reached\n",
                  (r["weight_bytes_per_token"].get<double>() + r["kv_bytes_per_token"].get<double>()) / 1e6,
                  r["weight_bytes_per_token"].get<double>() / 1e6, r["kv_bytes_per_token"].get<double>() / 1e6,
                  r["bound_tok_s"].get<double>(), r["pct_of_bound"].get<double>());
  }
  if (a.json) {
    nlohmann::json j = {{"model", a.model},     {"threads", kernels_threads()}, {"kernels", kernels_isa()},
                        {"kv_type", kv_label(a.kv)}, {"results", results}};
    if (a.bandwidth) j["bandwidth"] = bandwidth;
    std::cout << j.dump() << "\n";
  }
  return 0;
}

// One ratio, in its own process: load the saved prefill, cut, free, decode.
int run_worker(const BenchArgs& a, const Model& model) {
  const CacheFileInfo info = read_cache_info(a.worker_cache);
  BenchArgs b = a;
  b.kv.kv_type_k = info.shape.k_type;  // the file's types; its transforms come on the command line
  b.kv.kv_type_v = info.shape.v_type;
  Engine engine(model, session_options(b, info.next_position + a.n_decode + 1));
  engine.set_plan({.press = a.press, .ratio = a.worker_ratio});  // ratio 0: nothing removed, slack released as for the others
  engine.load_prompt_cache(a.worker_cache);
  const size_t full = engine.accounting().kv_bytes_full;
  // Sliding-window layers are left alone, as kvpress does; room is kept for the decode steps only.
  const double cut_ms = engine.compress_context(a.n_decode + 1);
  const Accounting held = engine.accounting();
  GenerateParams greedy;
  greedy.max_tokens = a.n_decode;
  greedy.ignore_eos = true;  // a fixed number of decode steps
  const double decode_ms = engine.generate({}, greedy).timings.decode_ms;
  nlohmann::json j = {{"ratio", a.worker_ratio},
                      {"ctx", info.next_position},
                      {"kv_bytes_held", held.kv_bytes_held},
                      {"kv_bytes_used", held.kv_bytes_used},
                      {"kv_bytes_full", full},
                      {"cut_ms", cut_ms},
                      {"decode_tokens", a.n_decode},
                      {"decode_ms_per_token", decode_ms / static_cast<double>(a.n_decode)},
                      {"rss_bytes", current_rss_bytes()},
                      {"peak_rss_bytes", peak_rss_bytes()}};
  std::cout << j.dump() << "\n";
  return 0;
}

std::string default_cache_dir() {
  if (const char* env = std::getenv("KVSQ_CACHE")) return std::string(env) + "/bench";
  const char* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.cache/kvsqueeze/bench";
}

std::string self_exe() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

int run_memory(const BenchArgs& a, const Model& model) {
  if (make_press(a.press, {})->needs().any())  // checked here, before any prefill or worker
    throw Error("bench --press " + a.press + " needs attention statistics, which a saved prefill does not carry " +
                "(use a statistics-free press: knorm, random, streaming_llm)");
  const ModelConfig& cfg = model.config();
  const auto ratios = parse_ratio_list(a.ratio_list, "--ratio");
  const std::string dir = a.cache_dir.empty() ? default_cache_dir() : a.cache_dir;
  std::filesystem::create_directories(dir);
  nlohmann::json results = nlohmann::json::array();
  for (int64_t ctx : parse_int_list(a.ctx_list, "--ctx")) {
    check_context(cfg, ctx, a.n_decode, ctx + a.n_decode + 1);  // the worker's session size
    const std::string file = dir + "/" + fingerprint_hex(model.fingerprint()) + "-ctx" + std::to_string(ctx) + "-" + kv_label(a.kv) +
                             "-seed" + std::to_string(a.seed) + ".kvc";
    double prefill_ms = -1;
    if (!std::filesystem::exists(file)) {
      Engine engine(model, session_options(a, ctx));
      prefill_ms = engine.prefill_context(random_prompt(cfg, ctx, a.seed));
      engine.save_prompt_cache(file, R"({"bench":"random prompt"})");
      if (!a.json) std::fprintf(stderr, "[bench] prefilled %lld tokens in %.1f s, saved %s\n", (long long)ctx, prefill_ms / 1000, file.c_str());
    }
    double base_ms = 0;
    for (double ratio : ratios) {
      std::string cmd = "'" + self_exe() + "' bench -m '" + a.model + "' --worker-cache '" + file + "' --worker-ratio " +
                        std::to_string(ratio) + " -n " + std::to_string(a.n_decode) + " -t " + std::to_string(a.threads) +
                        " --chunk " + std::to_string(a.chunk) + " --press " + a.press + " --kv-rotation " +
                        kv_transform_name(a.kv.kv_rotation) + " --kv-centering " + kv_transform_name(a.kv.kv_centering);
      FILE* p = popen(cmd.c_str(), "r");
      if (!p) throw Error("bench: cannot start a worker process");
      std::string out;
      char buf[4096];
      size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
      if (pclose(p) != 0 || out.empty()) throw Error("bench: worker for ratio " + std::to_string(ratio) + " failed");
      nlohmann::json r = nlohmann::json::parse(out);
      if (ratio == 0.0 || base_ms == 0) base_ms = r["decode_ms_per_token"].get<double>();
      r["decode_time_vs_first_ratio"] = r["decode_ms_per_token"].get<double>() / base_ms;
      r["held_vs_full"] = r["kv_bytes_held"].get<double>() / r["kv_bytes_full"].get<double>();
      if (prefill_ms >= 0) r["prefill_ms"] = prefill_ms;
      results.push_back(r);
      if (!a.json)
        std::printf("ctx %6lld  ratio %.2f  kv held %8.1f MiB (%5.1f%% of full)  decode %7.2f ms/token (x%.2f)  peak RSS %7.1f MiB\n",
                    (long long)ctx, ratio, r["kv_bytes_held"].get<double>() / 1048576.0, 100 * r["held_vs_full"].get<double>(),
                    r["decode_ms_per_token"].get<double>(), r["decode_time_vs_first_ratio"].get<double>(),
                    r["peak_rss_bytes"].get<double>() / 1048576.0);
    }
  }
  if (a.json) {
    nlohmann::json j = {{"model", a.model},     {"press", a.press},    {"threads", a.threads},
                        {"kernels", kernels_isa()}, {"kv_type", kv_label(a.kv)}, {"results", results}};
    std::cout << j.dump() << "\n";
  }
  return 0;
}

// Every registered scorer (presses that wrap none), for --press-time without --press.
std::string all_scorers() {
  std::string out;
  for (const auto& p : list_presses())
    if (p.inner == 0) out += (out.empty() ? "" : ",") + p.name;
  return out;
}

int press_time(const BenchArgs& a, const Model& model) {
  PressTimeArgs pt = a.pt;
  pt.model_path = a.model;
  pt.presses = a.press_given ? a.press : all_scorers();
  pt.kv = a.kv;
  pt.chunk = a.chunk;
  pt.threads = a.threads;
  pt.seed = a.seed;
  pt.json = a.json;
  const auto ctx = parse_int_list(a.ctx_list, "--ctx");
  if (ctx.size() != 1) throw Error("--press-time takes one --ctx, got '" + a.ctx_list + "'");
  pt.ctx = ctx[0];
  const auto ratios = parse_ratio_list(a.ratio_list.empty() ? "0.5" : a.ratio_list, "--ratio");
  if (ratios.size() != 1) throw Error("--press-time takes one --ratio, got '" + a.ratio_list + "'");
  pt.ratio = ratios[0];
  return cli::run_press_time(pt, model);
}

int run(BenchArgs a) {
  a.kv_types.apply(a.kv);
  a.device.apply(a.kv);
  if (a.n_decode < 1) throw Error("-n must be >= 1");
  if (!a.press_time && (!a.pt.press_opts.empty() || !a.pt.prompt_file.empty() || a.pt.random_ids || !a.pt.dump_ids.empty() || a.pt.repeat != 1 || a.pt.wait_idle_s != 0))
    throw Error("--press-opt, --prompt-file, --random-ids, --dump-ids, --repeat and --wait-idle belong to --press-time");
  auto model = Model::load(a.model);
  set_kernels_threads(a.threads);
  if (a.bandwidth && (a.press_time || !a.ratio_list.empty()))
    throw Error("--bandwidth goes with the speed benchmark, not with --ratio or --press-time");
  if (a.press_time) return press_time(a, *model);
  if (!a.worker_cache.empty()) return run_worker(a, *model);
  if (!a.ratio_list.empty()) return run_memory(a, *model);
  return run_speed(a, *model);
}

}  // namespace

Runner add_bench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* sub = app.add_subcommand("bench", "Measure prefill/decode speed, or decode speed and memory per compression ratio");
  sub->add_option("-m,--model", a->model, "GGUF model file")->required();
  sub->add_option("--ctx", a->ctx_list, "Comma-separated context lengths (prompt tokens)")->capture_default_str();
  sub->add_option("--ratio", a->ratio_list, "Comma-separated fractions of the cache removed; enables the memory benchmark");
  sub->add_option("--press", a->press,
                  "Keep-set used for the memory benchmark; with --press-time, comma-separated press expressions "
                  "(default there: every registered scorer)")
      ->capture_default_str();
  sub->add_option("--cache-dir", a->cache_dir, "Where prefilled caches are saved and reused (default: $KVSQ_CACHE/bench)");
  sub->add_option("-n,--n-decode", a->n_decode, "Tokens decoded after each prefill")->capture_default_str();
  sub->add_option("--chunk", a->chunk, "Prefill chunk size")->capture_default_str();
  sub->add_option("-t,--threads", a->threads, "Threads (0: one per core)")->capture_default_str();
  a->kv_types.add_to(*sub);
  a->device.add_to(*sub);
  sub->add_option("--seed", a->seed, "Seed of the random prompt")->capture_default_str();
  sub->add_option("--worker-cache", a->worker_cache, "(internal) measure one ratio on a saved cache")->group("");
  sub->add_option("--worker-ratio", a->worker_ratio, "(internal)")->group("");
  sub->add_flag("--json", a->json, "Print one JSON object");
  sub->add_flag("--bandwidth", a->bandwidth,
                "Also measure the machine's read bandwidth and, per context, the decode speed it allows (bytes read per "
                "token: weights + K/V) and the share of it reached");
  sub->add_flag("--press-time", a->press_time,
                "Per press: prefill time without and with the press (statistics, scoring, compaction), one --ctx and --ratio");
  sub->add_option("--press-opt", a->pt.press_opts, "(--press-time) KEY=VALUE press option, repeatable (as in generate)");
  sub->add_option("--prompt-file", a->pt.prompt_file, "(--press-time) text repeated up to --ctx tokens (default: a built-in text)");
  sub->add_flag("--random-ids", a->pt.random_ids, "(--press-time) uniform random token ids (--seed) instead of text");
  sub->add_option("--dump-ids", a->pt.dump_ids, "(--press-time) write the context's token ids to this JSON file");
  sub->add_option("--wait-idle", a->pt.wait_idle_s,
                  "(--press-time) before each run, wait up to this many seconds until other processes use < --max-foreign-load cores")
      ->capture_default_str();
  sub->add_option("--max-foreign-load", a->pt.max_foreign_load, "(--press-time) see --wait-idle; runs above it are contended")
      ->capture_default_str();
  sub->add_option("--repeat", a->pt.repeat, "(--press-time) measurements per press; the fastest is reported")->capture_default_str();
  auto* press_opt = sub->get_option("--press");
  return [a, press_opt] {
    a->press_given = press_opt->count() > 0;
    return run(*a);
  };
}

}  // namespace kvsqueeze::cli
