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
#include "text_file.h"
#include "kernels/threading.h"
#include "kvsqueeze/cache_file.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/generation.h"
#include "kvsqueeze/model.h"
#include "kvsqueeze/press.h"
#include "kvsqueeze/press_pipeline.h"

namespace kvsqueeze::cli {
namespace {

struct GenerateArgs {
  std::string model, prompt, prompt_file, press = "none", kv_type = "f16", save_cache, load_cache, decode_press;
  std::vector<std::string> questions, press_opts, decode_press_opts;
  CompressionPolicy policy;
  int64_t n_predict = 128, chunk = 512, ctx_size = 0;
  int threads = 0;
  double ratio = 0.0;
  bool json = false, chat = false, kv_type_given = false, query_aware = false;
  SamplerOptions sampling;
};

// The press that compresses the context, or null for --press none.
std::unique_ptr<Press> build_press(const GenerateArgs& a) {
  if (!(a.ratio >= 0.0 && a.ratio < 1.0)) throw Error("--ratio must be in [0, 1) (the fraction removed), got " + std::to_string(a.ratio));
  if (a.press == "none") {
    if (a.ratio != 0.0) throw Error("--ratio " + std::to_string(a.ratio) + " needs a press; --press none compresses nothing");
    if (!a.press_opts.empty()) throw Error("press 'none' has no options (got --press-opt " + a.press_opts[0] + ")");
    return nullptr;
  }
  std::vector<std::string> opts = a.press_opts;
  ModelConfig any;  // budget options are only split off here; their values are checked later
  any.layer_sliding = {false};
  any.head_dim_k = any.head_dim_v = any.n_head_kv = 1;
  take_budget_options(any, KvType::F16, a.ratio, opts);
  // finch's window is each question's length, set per question; validate the rest now.
  if (expression_mentions(a.press, "finch")) opts.push_back("finch.window_size=1");
  return make_press(a.press, opts);
}

// The prompt must fit before anything is printed; generation itself stops at the context end.
void check_fits(const Session& session, size_t prompt_tokens) {
  const int64_t limit = session.options().ctx_size;
  if (static_cast<int64_t>(prompt_tokens) > limit)
    throw Error("prompt of " + std::to_string(prompt_tokens) + " tokens exceeds the context size " + std::to_string(limit) +
                " (raise --ctx-size, at most the model's " + std::to_string(session.model().config().n_ctx_train) + ")");
}

// Puts the prompt (or context) into the cache: loaded from --load-cache, whose tokens must be
// exactly `ids`, or evaluated (with room for reserve_more tokens after it); then saved to
// --save-cache. Returns the milliseconds spent.
double prefill_or_load(Session& session, const std::vector<int32_t>& ids, int64_t reserve_more, const GenerateArgs& a,
                       PressRunner* runner, bool& loaded) {
  const auto t0 = std::chrono::steady_clock::now();
  if (!a.load_cache.empty()) {
    const std::vector<int32_t> cached = load_cache(session, a.load_cache).tokens;
    if (cached != ids) {
      const size_t same = static_cast<size_t>(std::mismatch(ids.begin(), ids.end(), cached.begin(), cached.end()).first - ids.begin());
      throw Error("the prompt does not match the cached tokens of '" + a.load_cache + "' (" + std::to_string(ids.size()) +
                  " prompt tokens, " + std::to_string(cached.size()) + " cached, the first " + std::to_string(same) + " equal)");
    }
    loaded = true;
  } else {
    if (reserve_more > 0) session.reserve(static_cast<int64_t>(ids.size()) + reserve_more);
    if (runner) runner->prefill(ids, reserve_more);
    else session.eval(ids);
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!a.save_cache.empty()) {
    const nlohmann::json meta = {{"press", a.press}, {"ratio", a.ratio}, {"press_opts", a.press_opts}, {"chat", a.chat}};
    save_cache(session, ids, a.save_cache, meta.dump());
  }
  return ms;
}

nlohmann::json timings_json(const GenerationResult& r) {
  const double n_decoded = static_cast<double>(r.tokens.size());  // each was evaluated once
  return {{"prefill_ms", r.prefill_ms},
          {"decode_ms", r.decode_ms},
          {"prefill_tok_s", r.prefill_ms > 0 ? r.prompt_tokens * 1000.0 / r.prefill_ms : 0.0},
          {"decode_tok_s", r.decode_ms > 0 ? n_decoded * 1000.0 / r.decode_ms : 0.0}};
}

int run(GenerateArgs& a) {
  if (a.prompt.empty() == a.prompt_file.empty()) throw Error("give exactly one of -p TEXT or -f FILE");
  if (a.n_predict < 0) throw Error("-n must be >= 0, got " + std::to_string(a.n_predict));
  const std::unique_ptr<Press> press = build_press(a);
  a.policy.validate();
  // Finch scores the context by the question's attention: it only exists query-aware.
  if (expression_mentions(a.press, "finch")) a.query_aware = true;
  if (a.query_aware && a.questions.empty()) throw Error("query-aware compression (--query-aware, finch) needs a question: -q TEXT");
  if (a.query_aware && !press) throw Error("--query-aware needs a press (--press NAME --ratio R)");
  // A decode press compresses on its own trigger (LagKV) and/or every --decode-interval steps.
  a.policy.decode_triggers = !a.decode_press.empty();
  // A press whose method compresses while decoding (pyramid_merge) does so without a decode flag.
  a.policy = effective_policy(a.policy, press.get());
  if (a.decode_press.empty() && !a.decode_press_opts.empty()) throw Error("--decode-press-opt needs --decode-press");
  if (a.policy.every_chunk && !press) throw Error("--compress-chunks needs a press (--press NAME --ratio R)");
  // The same expression as --press shares that press (and its state, e.g. LagKV's compressed prefix).
  const bool same_press = !a.decode_press.empty() && a.decode_press == a.press && a.decode_press_opts.empty();
  const std::unique_ptr<Press> own_decode_press =
      a.decode_press.empty() || same_press ? nullptr : make_press(a.decode_press, a.decode_press_opts);
  Press* decode_press = own_decode_press ? own_decode_press.get() : press.get();
  if (a.policy.decoding() && !decode_press) throw Error("--decode-interval needs a press: --decode-press NAME (or --press NAME)");
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
  so.kv_type = parse_kv_type(a.kv_type);
  // A loaded cache brings its element type unless --kv-type asks for one (then they must agree).
  if (!a.load_cache.empty() && !a.kv_type_given) so.kv_type = read_cache_info(a.load_cache).shape.type;
  Session session(*model, so);
  std::vector<std::string> rest = a.press_opts;
  const Budget budget = take_budget_options(cfg, so.kv_type, a.ratio, rest);
  std::unique_ptr<PressRunner> runner;
  if (press || a.policy.decoding())
    runner = std::make_unique<PressRunner>(session, press.get(), budget, a.policy.decoding() ? decode_press : nullptr, a.policy);
  const Tokenizer& tok = model->tokenizer();
  const ChatTemplate& tmpl = model->chat_template();
  Sampler sampler(a.sampling);
  auto stream = [&](const std::string& s) {
    if (!a.json) {
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fflush(stdout);
    }
  };

  std::vector<int32_t> prompt_ids;
  std::vector<GenerationResult> answers;
  GenerationResult main_result;
  bool cache_loaded = false;
  // The context of -q questions (the chat template's part before the question), evaluated or
  // loaded with room for the longest question and its answer; returns the milliseconds spent.
  auto prefill_context = [&](PressRunner* context_runner) {
    prompt_ids = tok.encode(tmpl.split(context, a.questions[0]).context_part, tok.add_bos_by_default());
    size_t longest_question = 0;
    for (const auto& q : a.questions)
      longest_question = std::max(longest_question, tok.encode(tmpl.split(context, q).question_part, false).size());
    check_fits(session, prompt_ids.size() + longest_question);
    return prefill_or_load(session, prompt_ids, static_cast<int64_t>(longest_question) + a.n_predict, a, context_runner, cache_loaded);
  };
  if (a.questions.empty()) {
    // The whole prompt is the context: prefill (compressing, or load) first, then generate.
    const std::string text = a.chat ? tmpl.apply({{"user", context}}, true) : context;
    prompt_ids = tok.encode(text, tok.add_bos_by_default());
    check_fits(session, prompt_ids.size());
    const double prefill_ms = prefill_or_load(session, prompt_ids, a.n_predict, a, runner.get(), cache_loaded);
    if (runner) runner->start_decoding();
    if (!a.json && !a.chat) stream(context);
    main_result = generate(session, {}, a.n_predict, sampler, stream);
    main_result.prefill_ms = prefill_ms;
    main_result.prompt_tokens = static_cast<int64_t>(prompt_ids.size());
  } else if (a.query_aware) {
    // Query-aware compression (Finch; kvpress's question-in-context setting): the context is
    // evaluated whole once; each question is appended to its own copy of it, and the press
    // compresses context and question together before the answer is decoded.
    runner.reset();
    const double context_ms = prefill_context(nullptr);
    const int32_t context_end = session.next_position();
    const std::vector<float> context_logits = session.last_logits();
    for (size_t qi = 0; qi < a.questions.size(); ++qi) {
      const auto ids = tok.encode(tmpl.split(context, a.questions[qi]).question_part, false);
      if (!a.json) stream("\n[Q] " + a.questions[qi] + "\n[A] ");
      std::unique_ptr<KvCache> snapshot;
      if (qi + 1 < a.questions.size()) snapshot = std::make_unique<KvCache>(clone_cache(session.cache()));
      std::vector<std::string> opts = rest;
      if (expression_mentions(a.press, "finch")) opts.push_back("finch.window_size=" + std::to_string(ids.size()));
      auto question_press = make_press(a.press, opts);
      const auto t0 = std::chrono::steady_clock::now();
      GenerationResult r;
      {
        // Decoding with --press itself continues with the press that compressed this question.
        Press* question_decode_press = decode_press == press.get() ? question_press.get() : decode_press;
        PressRunner question_runner(session, question_press.get(), budget, a.policy.decoding() ? question_decode_press : nullptr, a.policy);
        question_runner.prefill(ids, a.n_predict);
        const double question_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        question_runner.start_decoding();
        r = generate(session, {}, a.n_predict, sampler, stream);
        r.prefill_ms = context_ms + question_ms;
        r.prompt_tokens = static_cast<int64_t>(prompt_ids.size() + ids.size());
      }
      answers.push_back(r);
      if (snapshot) session.restore(std::move(*snapshot), context_end, context_logits);
    }
    main_result = answers[0];
  } else {
    // Context first, then each question from the same cache, rolled back after its answer.
    const double context_ms = prefill_context(runner.get());
    const int32_t context_end = session.next_position();
    session.cache().protect_query_position(context_end);  // every answer is rolled back to here
    if (runner) runner->start_decoding();
    // Decoding-time compression evicts context slots for good: each further question then
    // starts from its own copy of the compressed context (a fork) instead of a rollback.
    const bool fork = a.policy.decoding() && a.questions.size() > 1;
    const std::vector<float> context_logits = session.last_logits();
    for (size_t qi = 0; qi < a.questions.size(); ++qi) {
      const auto& q = a.questions[qi];
      const auto ids = tok.encode(tmpl.split(context, q).question_part, false);
      if (!a.json) stream("\n[Q] " + q + "\n[A] ");
      std::unique_ptr<KvCache> snapshot;
      if (fork && qi + 1 < a.questions.size()) snapshot = std::make_unique<KvCache>(clone_cache(session.cache()));
      if (runner) runner->start_decoding();
      GenerationResult r = generate(session, ids, a.n_predict, sampler, stream);
      r.prefill_ms += context_ms;
      r.prompt_tokens += static_cast<int64_t>(prompt_ids.size());
      answers.push_back(r);
      if (snapshot) session.restore(std::move(*snapshot), context_end, context_logits);
      else if (!fork) session.rollback_to(context_end);
    }
    main_result = answers[0];
  }
  // Generation that ran out of context stops early: say so, on stderr in every mode.
  bool context_full = main_result.stopped_at_context_end;
  for (const auto& r : answers) context_full = context_full || r.stopped_at_context_end;
  if (context_full)
    std::fprintf(stderr, "[kvsqueeze] stopped early: the context of %lld positions is full (raise --ctx-size, at most %lld)\n",
                 static_cast<long long>(session.options().ctx_size), static_cast<long long>(cfg.n_ctx_train));
  auto stop_reason = [](const GenerationResult& r) {
    return r.stopped_at_eog ? "end_of_generation" : r.stopped_at_context_end ? "context_full" : "max_tokens";
  };
  if (!a.json) {
    std::printf("\n");
    const auto t = timings_json(main_result);
    std::fprintf(stderr, "[kvsqueeze] prompt %zu tokens, %.1f tok/s prefill; %zu generated, %.1f tok/s decode; KV held %.2f MiB\n",
                 prompt_ids.size(), t["prefill_tok_s"].get<double>(), main_result.tokens.size(), t["decode_tok_s"].get<double>(),
                 session.cache().bytes_held() / 1048576.0);
    return 0;
  }
  nlohmann::json j;
  j["model"] = a.model;
  j["press"] = a.press;
  j["ratio"] = a.ratio;
  j["prompt_tokens"] = prompt_ids;
  j["output_tokens"] = main_result.tokens;
  j["text"] = main_result.text;
  j["stop_reason"] = stop_reason(main_result);
  j["kv_bytes_held"] = session.cache().bytes_held();
  j["kv_bytes_used"] = session.cache().bytes_used();
  j["kv_bytes_full"] = session.kv_bytes_full();
  j["kv_type"] = kv_type_name(session.cache().shape().type);
  j["cache_loaded"] = cache_loaded;
  j["kv_lengths"] = session.cache().lengths();
  j["compression"] = {{"press", a.press},
                      {"ratio", a.ratio},
                      {"budget_tokens", budget.tokens},
                      {"every_chunk", a.policy.every_chunk},
                      {"decode_press", a.policy.decoding() ? (a.decode_press.empty() ? a.press : a.decode_press) : "none"},
                      {"decode_interval", a.policy.decode_interval},
                      {"decode_target", a.policy.decode_target},
                      {"decode_ratio", a.policy.decode_ratio},
                      {"layer_compressions", runner ? runner->compressions() : 0},
                      {"slots_removed", runner ? runner->slots_removed() : 0}};
  j["timings"] = timings_json(main_result);
  j["peak_rss_bytes"] = peak_rss_bytes();
  j["threads"] = kernels::num_threads();
  if (!answers.empty()) {
    nlohmann::json arr = nlohmann::json::array();
    for (size_t i = 0; i < answers.size(); ++i)
      arr.push_back({{"question", a.questions[i]}, {"output_tokens", answers[i].tokens}, {"text", answers[i].text},
                     {"stop_reason", stop_reason(answers[i])}, {"timings", timings_json(answers[i])}});
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
  auto* kv_type = sub->add_option("--kv-type", a->kv_type, "KV cache element type: f16, bf16, f32")->capture_default_str();
  sub->add_option("--save-cache", a->save_cache, "Save the cache of the prompt (the context with -q) to FILE");
  sub->add_option("--load-cache", a->load_cache,
                  "Start from a saved cache instead of evaluating the prompt (which must match its tokens)");
  sub->add_flag("--chat", a->chat, "Wrap the prompt in the model's chat template");
  sub->add_flag("--json", a->json, "Print one JSON object instead of streaming text");
  return [a, kv_type] {
    a->kv_type_given = kv_type->count() > 0;
    return run(*a);
  };
}

}  // namespace kvsqueeze::cli
