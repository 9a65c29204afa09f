// kvsqueeze generate: text generation, optionally as context + questions (only the context
// is meant to be compressed; each question is answered from it and then rolled back).
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "device_flag.h"
#include "kv_type_flags.h"
#include "text_file.h"
#include "kvsqueeze/cache_file.h"
#include "kvsqueeze/engine.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/generation.h"
#include "kvsqueeze/kernels_isa.h"
#include "kvsqueeze/model.h"
#include "kvsqueeze/press.h"
#include "kvsqueeze/press_pipeline.h"

namespace kvsqueeze::cli {
namespace {

struct GenerateArgs {
  std::string model, prompt, prompt_file, press = "none", save_cache, load_cache, decode_press;
  std::vector<std::string> questions, press_opts, decode_press_opts;
  CompressionPolicy policy;
  int64_t n_predict = 128, chunk = 512, ctx_size = 0;
  int threads = 0;
  double ratio = 0.0;
  bool json = false, chat = false, query_aware = false;
  KvTypeFlags kv_types;
  DeviceFlag device;
  SamplerOptions sampling;
};

CompressionPlan plan_of(const GenerateArgs& a) {
  return {.press = a.press, .ratio = a.ratio, .options = a.press_opts, .query_aware = a.query_aware, .policy = a.policy,
          .decode_press = a.decode_press, .decode_options = a.decode_press_opts};
}

nlohmann::json timings_json(const Timings& t) {
  return {{"prefill_ms", t.prefill_ms}, {"decode_ms", t.decode_ms}, {"prefill_tok_s", t.prefill_tok_s()}, {"decode_tok_s", t.decode_tok_s()}};
}

int run(GenerateArgs& a) {
  if (a.prompt.empty() == a.prompt_file.empty()) throw Error("give exactly one of -p TEXT or -f FILE");
  if (a.n_predict < 0) throw Error("-n must be >= 0, got " + std::to_string(a.n_predict));
  const PlanReport checked = validate_plan(plan_of(a));  // before the model loads
  if (checked.query_aware && a.questions.empty())
    throw Error("query-aware compression (--query-aware, finch) needs a question: -q TEXT");
  Sampler::validate(a.sampling);
  const std::string context = a.prompt_file.empty() ? a.prompt : read_text_file(a.prompt_file, "prompt file");

  auto model = Model::load(a.model);
  const ModelConfig& cfg = model->config();
  if (a.ctx_size < 0 || a.ctx_size > cfg.n_ctx_train)
    throw Error("--ctx-size must be between 1 and the model's trained context " + std::to_string(cfg.n_ctx_train) + ", got " +
                std::to_string(a.ctx_size));
  SessionOptions so;
  so.ctx_size = a.ctx_size;
  so.chunk = a.chunk;
  so.threads = a.threads;
  a.kv_types.apply(so);
  a.device.apply(so);
  // A loaded cache brings its element types unless the flags ask for some (then they must agree).
  if (!a.load_cache.empty() && !a.kv_types.given()) {
    const KvCacheShape file = read_cache_info(a.load_cache).shape;
    so.kv_type_k = file.k_type;
    so.kv_type_v = file.v_type;
  }
  Engine engine(*model, so);
  const PlanReport& plan = engine.set_plan(plan_of(a));
  GenerateParams params;
  params.max_tokens = a.n_predict;
  params.sampling = a.sampling;
  params.on_text = [&](const std::string& s) {
    if (!a.json) {
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fflush(stdout);
    }
    return true;
  };
  auto say = [&](const std::string& s) { params.on_text(s); };

  // The prompt (the context with -q) is loaded from --load-cache, whose tokens must be exactly
  // these, or evaluated with room for `reserve` more tokens; then saved to --save-cache.
  bool cache_loaded = false;
  auto prefill_or_load = [&](const std::vector<int32_t>& ids, int64_t reserve) {
    if (!a.load_cache.empty()) {
      engine.load_prompt_cache(a.load_cache, ids);
      cache_loaded = true;
    } else {
      engine.prefill_context(ids, reserve);
    }
    if (!a.save_cache.empty())
      engine.save_prompt_cache(a.save_cache, nlohmann::json{{"press", a.press}, {"ratio", a.ratio}, {"press_opts", a.press_opts}, {"chat", a.chat}}.dump());
  };

  std::vector<int32_t> prompt_ids;
  std::vector<Completion> answers;
  Completion main_result;
  if (a.questions.empty()) {
    // The whole prompt is the context: prefill (compressing, or load) first, then generate.
    const Tokenizer& tok = model->tokenizer();
    const std::string text = a.chat ? model->chat_template().apply({{"user", context}}, true) : context;
    prompt_ids = tok.encode(text, tok.add_bos_by_default());
    engine.check_fits(static_cast<int64_t>(prompt_ids.size()));
    prefill_or_load(prompt_ids, a.n_predict);
    if (!a.json && !a.chat) say(context);
    main_result = engine.generate({}, params);
  } else {
    // Context first (compressed unless each question is compressed with its own copy of it),
    // then each question from it; the engine restores the context after each answer.
    prompt_ids = engine.context_ids(context);
    size_t longest_question = 0;
    std::vector<std::vector<int32_t>> question_ids;
    for (const auto& q : a.questions) {
      question_ids.push_back(engine.question_ids(context, q));
      longest_question = std::max(longest_question, question_ids.back().size());
    }
    engine.check_fits(static_cast<int64_t>(prompt_ids.size() + longest_question));
    prefill_or_load(prompt_ids, static_cast<int64_t>(longest_question) + a.n_predict);
    for (size_t qi = 0; qi < a.questions.size(); ++qi) {
      say("\n[Q] " + a.questions[qi] + "\n[A] ");
      answers.push_back(engine.answer(question_ids[qi], params, qi + 1 < a.questions.size()));
    }
    main_result = answers[0];
  }
  // Generation that ran out of context stops early: say so, on stderr in every mode.
  bool context_full = main_result.stop_reason == StopReason::ContextFull;
  for (const auto& r : answers) context_full = context_full || r.stop_reason == StopReason::ContextFull;
  if (context_full)
    std::fprintf(stderr, "[kvsqueeze] stopped early: the context of %lld positions is full (raise --ctx-size, at most %lld)\n",
                 static_cast<long long>(engine.session().options().ctx_size), static_cast<long long>(cfg.n_ctx_train));
  const Accounting acc = engine.accounting();
  if (!a.json) {
    std::printf("\n");
    const Timings& t = main_result.timings;
    std::fprintf(stderr, "[kvsqueeze] prompt %zu tokens, %.1f tok/s prefill; %zu generated, %.1f tok/s decode; KV held %.2f MiB\n",
                 prompt_ids.size(), t.prefill_tok_s(), main_result.tokens.size(), t.decode_tok_s(), acc.kv_bytes_held / 1048576.0);
    return 0;
  }
  nlohmann::json j;
  j["model"] = a.model;
  j["press"] = a.press;
  j["ratio"] = a.ratio;
  j["prompt_tokens"] = prompt_ids;
  j["output_tokens"] = main_result.tokens;
  j["text"] = main_result.text;
  j["stop_reason"] = stop_reason_name(main_result.stop_reason);
  j["kv_bytes_held"] = acc.kv_bytes_held;
  j["kv_bytes_used"] = acc.kv_bytes_used;
  j["kv_bytes_full"] = acc.kv_bytes_full;
  j["kv_type"] = kv_types_label(so.kv_type_k, so.kv_type_v);
  j["cache_loaded"] = cache_loaded;
  j["kv_lengths"] = acc.kv_lengths;
  j["compression"] = {{"press", a.press},
                      {"ratio", a.ratio},
                      {"budget_tokens", plan.budget_tokens},
                      {"every_chunk", plan.policy.every_chunk},
                      {"decode_press", plan.decode_press},
                      {"decode_interval", plan.policy.decode_interval},
                      {"decode_target", plan.policy.decode_target},
                      {"decode_ratio", plan.policy.decode_ratio},
                      {"layer_compressions", acc.layer_compressions},
                      {"slots_removed", acc.slots_removed}};
  j["timings"] = timings_json(main_result.timings);
  j["peak_rss_bytes"] = peak_rss_bytes();
  j["threads"] = kernels_threads();
  j["kernels"] = kernels_isa();
  if (!answers.empty()) {
    nlohmann::json arr = nlohmann::json::array();
    for (size_t i = 0; i < answers.size(); ++i)
      arr.push_back({{"question", a.questions[i]}, {"output_tokens", answers[i].tokens}, {"text", answers[i].text},
                     {"stop_reason", stop_reason_name(answers[i].stop_reason)}, {"timings", timings_json(answers[i].timings)}});
    j["answers"] = arr;
  }
  std::cout << j.dump() << "\n";
  return 0;
}

}  // namespace

Runner add_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  auto* sub = app.add_subcommand("generate", "Generate text, optionally answering questions about a context");
  sub->add_option("-m,--model", a->model, "GGUF model file")->required();
  sub->add_option("-p,--prompt", a->prompt, "Prompt (the context when -q is given)");
  sub->add_option("-f,--file", a->prompt_file, "Read the prompt / context from a file");
  sub->add_option("-q,--question", a->questions, "A question about the context (repeatable)");
  sub->add_option("-n,--n-predict", a->n_predict, "Most tokens to generate per answer")->capture_default_str();
  sub->add_option("--temp", a->sampling.temperature, "Sampling temperature; 0 is greedy")->capture_default_str();
  sub->add_option("--seed", a->sampling.seed, "Sampling seed")->capture_default_str();
  sub->add_option("--top-k", a->sampling.top_k, "Top-k filter (0: off)")->capture_default_str();
  sub->add_option("--top-p", a->sampling.top_p, "Top-p filter (1: off)")->capture_default_str();
  sub->add_option("--min-p", a->sampling.min_p, "Min-p filter (0: off)")->capture_default_str();
  sub->add_option("--press", a->press, "Compression method (none)")->capture_default_str();
  sub->add_option("--ratio", a->ratio, "Fraction of the context cache removed, in [0, 1)")->capture_default_str();
  sub->add_option("--press-opt", a->press_opts, "Press option KEY=VALUE (repeatable)");
  sub->add_flag("--query-aware", a->query_aware,
                "Compress the context together with each question (on its own copy of the context); implied by finch");
  sub->add_flag("--compress-chunks", a->policy.every_chunk,
                "Compress after every prefill chunk (peak cache ~ budget + one chunk), not only after the last");
  sub->add_option("--decode-interval", a->policy.decode_interval, "Compress during decoding every N steps (0: never)")
      ->capture_default_str();
  sub->add_option("--decode-target", a->policy.decode_target, "Slots per head that decoding compression keeps");
  sub->add_option("--decode-ratio", a->policy.decode_ratio, "Or: fraction of the positions seen that decoding compression removes");
  sub->add_option("--decode-press", a->decode_press,
                  "Press for decoding-time compression (default: --press); alone it compresses on its own trigger (lagkv)");
  sub->add_option("--decode-press-opt", a->decode_press_opts, "Option KEY=VALUE of --decode-press (repeatable)");
  sub->add_option("--chunk", a->chunk, "Prefill chunk size in tokens")->capture_default_str();
  sub->add_option("--ctx-size", a->ctx_size, "Context size in tokens (0: the model's trained context)")->capture_default_str();
  sub->add_option("-t,--threads", a->threads, "Threads (0: one per core)")->capture_default_str();
  a->kv_types.add_to(*sub);
  a->device.add_to(*sub);
  sub->add_option("--save-cache", a->save_cache, "Save the cache of the prompt (the context with -q) to FILE");
  sub->add_option("--load-cache", a->load_cache,
                  "Start from a saved cache instead of evaluating the prompt (which must match its tokens)");
  sub->add_flag("--chat", a->chat, "Wrap the prompt in the model's chat template");
  sub->add_flag("--json", a->json, "Print one JSON object instead of streaming text");
  return [a] { return run(*a); };
}

}  // namespace kvsqueeze::cli
