// kvsqueeze serve: an OpenAI-compatible HTTP server over compressed KV caches (docs/SERVING.md).
// The address is bound first and /health answers 503 while the model loads; SIGTERM or SIGINT
// stop accepting, let requests in flight finish until --shutdown-timeout, cancel the rest and exit 0.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "commands.h"
#include "device_flag.h"
#include "kv_type_flags.h"
#include "heap_policy.h"
#include "http_server.h"
#include "kvsqueeze/engine.h"
#include "kvsqueeze/error.h"
#include "scheduler.h"

namespace kvsqueeze::cli {
namespace {

struct ServeArgs {
  std::string model, host = "127.0.0.1", api_key, alias, press = "none", decode_press, prompt_cache_dir;
  std::vector<std::string> press_opts, decode_press_opts;
  CompressionPolicy policy;
  int port = 8080, parallel = 4, threads = 0;
  double ratio = 0.0, kv_budget_mib = 0.0, max_body_mib = 8.0, shutdown_timeout = 10.0;
  int64_t ctx_size = 0, chunk = 512, max_tokens = 4096, max_prompt_tokens = 0;
  size_t queue = 64, cached_contexts = 64;
  KvTypeFlags kv_types;
  DeviceFlag device;
};

int run(const ServeArgs& a) {
  const CompressionPlan plan{.press = a.press, .ratio = a.ratio, .options = a.press_opts, .policy = a.policy,
                             .decode_press = a.decode_press, .decode_options = a.decode_press_opts};
  if (validate_plan(plan).query_aware) throw Error("query-aware presses (finch, --query-aware) are not served");
  if (a.parallel < 1) throw Error("--parallel must be >= 1, got " + std::to_string(a.parallel));
  if (a.kv_budget_mib < 0) throw Error("--kv-budget must be >= 0 MiB");
  if (a.max_tokens < 1) throw Error("--max-tokens must be >= 1");
  if (!a.prompt_cache_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(a.prompt_cache_dir, ec);
    if (!std::filesystem::is_directory(a.prompt_cache_dir))
      throw Error("--prompt-cache-dir '" + a.prompt_cache_dir + "' is not a folder and cannot be made one");
  }

  // Signals are taken by sigwait below: blocked here, before any thread starts, so every thread
  // inherits the mask. A client that goes away must not kill the server with SIGPIPE.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  SessionOptions device_check;
  a.device.apply(device_check);  // an unusable --device fails before the server listens

  server::configure_heap();
  server::Metrics metrics;
  server::HttpOptions ho;
  ho.host = a.host;
  ho.port = a.port;
  ho.api_key = a.api_key;
  ho.max_body_bytes = static_cast<size_t>(a.max_body_mib * 1048576.0);
  ho.threads = std::max(16, a.parallel + static_cast<int>(a.queue) + 8);
  ho.model_name = a.alias.empty() ? std::filesystem::path(a.model).stem().string() : a.alias;
  server::HttpServer http(ho, metrics);
  if (!http.bind()) throw Error("cannot listen on " + a.host + ":" + std::to_string(a.port) + " (address in use or not local)");
  std::thread listener([&] { http.listen(); });
  std::fprintf(stderr, "[kvsqueeze] listening on http://%s:%d (loading %s)\n", a.host.c_str(), http.port(), a.model.c_str());

  std::unique_ptr<Model> model;
  std::unique_ptr<server::Scheduler> scheduler;
  try {
    model = Model::load(a.model);
    server::SchedulerOptions so;
    so.parallel = a.parallel;
    so.queue_max = a.queue;
    so.kv_budget_bytes = static_cast<uint64_t>(a.kv_budget_mib * 1048576.0);
    so.max_prompt_tokens = a.max_prompt_tokens;
    so.session.ctx_size = a.ctx_size;
    so.session.chunk = a.chunk;
    so.session.threads = a.threads;
    a.kv_types.apply(so.session);
    a.device.apply(so.session);
    so.max_cached_contexts = a.cached_contexts;
    so.prompt_cache_dir = a.prompt_cache_dir;
    if (a.ctx_size < 0 || a.ctx_size > model->config().n_ctx_train)
      throw Error("--ctx-size must be between 1 and the model's trained context " + std::to_string(model->config().n_ctx_train));
    scheduler = std::make_unique<server::Scheduler>(*model, so, metrics);
  } catch (...) {
    http.stop();
    listener.join();
    throw;
  }
  http.set_ready(scheduler.get(), {.default_plan = plan, .max_tokens_cap = a.max_tokens});
  std::fprintf(stderr, "[kvsqueeze] ready: %s, press %s, ratio %g, %d parallel, KV budget %s\n", ho.model_name.c_str(),
               a.press.c_str(), a.ratio, a.parallel, a.kv_budget_mib > 0 ? (std::to_string(a.kv_budget_mib) + " MiB").c_str() : "none");

  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::fprintf(stderr, "[kvsqueeze] %s: finishing requests in flight (at most %.1f s)\n", sig == SIGTERM ? "SIGTERM" : "SIGINT",
               a.shutdown_timeout);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(a.shutdown_timeout * 1000));
  scheduler->drain(deadline);
  http.stop();
  listener.join();
  scheduler.reset();
  std::fprintf(stderr, "[kvsqueeze] stopped\n");
  return 0;
}

}  // namespace

Runner add_serve(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  auto* sub = app.add_subcommand("serve", "Serve an OpenAI-compatible HTTP API over compressed KV caches");
  sub->add_option("-m,--model", a->model, "GGUF model file")->required();
  sub->add_option("--host", a->host, "Address to listen on (loopback by default)")->capture_default_str();
  sub->add_option("--port", a->port, "Port (0: any free one, printed on stderr)")->capture_default_str();
  sub->add_option("--parallel", a->parallel, "Sequences decoded together; more requests wait in the queue")->capture_default_str();
  sub->add_option("--queue", a->queue, "Requests that may wait; beyond, 503 with Retry-After")->capture_default_str();
  sub->add_option("--kv-budget", a->kv_budget_mib, "MiB of KV cache for all sequences and cached contexts (0: no limit)")
      ->capture_default_str();
  sub->add_option("--cached-contexts", a->cached_contexts, "Compressed contexts kept for reuse (0: none)")->capture_default_str();
  sub->add_option("--prompt-cache-dir", a->prompt_cache_dir,
                  "Folder where POST /contexts/ID?action=save writes cached contexts and action=restore reads them");
  sub->add_option("--press", a->press, "Default press for requests without kv_press")->capture_default_str();
  sub->add_option("--ratio", a->ratio, "Default fraction of the context cache removed")->capture_default_str();
  sub->add_option("--press-opt", a->press_opts, "Default press option KEY=VALUE (repeatable)");
  sub->add_flag("--compress-chunks", a->policy.every_chunk, "Compress after every prefill chunk by default");
  sub->add_option("--decode-interval", a->policy.decode_interval, "Default: compress during decoding every N steps");
  sub->add_option("--decode-target", a->policy.decode_target, "Default: slots per head that decoding compression keeps");
  sub->add_option("--decode-ratio", a->policy.decode_ratio, "Default: fraction decoding compression removes");
  sub->add_option("--decode-press", a->decode_press, "Default press for decoding-time compression");
  sub->add_option("--decode-press-opt", a->decode_press_opts, "Option KEY=VALUE of --decode-press (repeatable)");
  sub->add_option("--api-key", a->api_key, "Require Authorization: Bearer KEY (except on /health)");
  sub->add_option("--max-tokens", a->max_tokens, "Most tokens a request may generate")->capture_default_str();
  sub->add_option("--max-prompt-tokens", a->max_prompt_tokens, "Longest prompt accepted (0: the context size)")->capture_default_str();
  sub->add_option("--max-body", a->max_body_mib, "Largest request body in MiB")->capture_default_str();
  sub->add_option("--ctx-size", a->ctx_size, "Context size per sequence (0: the model's trained context)")->capture_default_str();
  sub->add_option("--chunk", a->chunk, "Prefill chunk: the longest a running stream waits for a prompt")->capture_default_str();
  sub->add_option("-t,--threads", a->threads, "Threads (0: one per core)")->capture_default_str();
  a->kv_types.add_to(*sub);
  a->device.add_to(*sub);
  sub->add_option("--alias", a->alias, "Model name in responses and /v1/models (default: the file's stem)");
  sub->add_option("--shutdown-timeout", a->shutdown_timeout, "Seconds requests in flight get after SIGTERM")->capture_default_str();
  return [a] { return run(*a); };
}

}  // namespace kvsqueeze::cli
