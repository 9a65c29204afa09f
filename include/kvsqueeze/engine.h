#pragma once
// The engine API: the one way in for every front end (the CLI, the Python package, the HTTP
// server, the examples). In the spirit of llama.cpp's llama.h: load a Model once, open an Engine
// per sequence, give it a compression plan, prefill a context, answer questions from it or
// generate, and read back what the cache holds.
//
//   auto model = kvsqueeze::Model::load("model.gguf");
//   kvsqueeze::Engine engine(*model);
//   engine.set_plan({.press = "snapkv", .ratio = 0.5});
//   engine.prefill_context(document);                           // compressed as the plan says
//   auto a = engine.answer("What is the capital?");             // the context is kept for the next one
//   std::printf("%s (%zu of %zu bytes held)\n", a.text.c_str(), engine.accounting().kv_bytes_held,
//               engine.accounting().kv_bytes_full);
//
// Thread-safety: a Model is immutable once loaded and may be shared by any number of Engines on
// any threads. An Engine is one sequence: use it from one thread at a time. Cancellation is the
// exception: GenerateParams::cancel may be set from any thread.
//
// Errors: every failure is a kvsqueeze::Error (error.h). ParameterError names the field of
// CompressionPlan / SessionOptions / SamplerOptions / GenerateParams that is wrong, never a CLI flag.
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kvsqueeze/error.h"
#include "kvsqueeze/generation.h"
#include "kvsqueeze/model.h"
#include "kvsqueeze/press_pipeline.h"
#include "kvsqueeze/sampler.h"
#include "kvsqueeze/session.h"

namespace kvsqueeze {

// How the context's cache is compressed. Validated once by Engine::set_plan (or validate_plan).
struct CompressionPlan {
  std::string press = "none";        // a press expression: "snapkv", "adakv(expected_attention)", "none"
  double ratio = 0.0;                // fraction of the context's cache removed, in [0, 1)
  std::vector<std::string> options;  // KEY=VALUE or PRESS.KEY=VALUE; budget=N / budget_bytes=N give an absolute budget
  bool query_aware = false;          // compress the context together with each question (implied by finch)
  // Where it acts besides the end of the prefill: after every prefill chunk, and while decoding.
  CompressionPolicy policy;
  std::string decode_press;                 // decoding-time press ("" : `press`); alone it compresses on its own trigger
  std::vector<std::string> decode_options;  // its options
};

// The plan as the engine will carry it out.
struct PlanReport {
  std::string press = "none";
  double ratio = 0.0;
  bool compresses = false;        // a press acts on the context
  bool query_aware = false;       // each question is compressed with its own copy of the context
  bool own_budget = false;        // the press sizes itself (pyramid_merge, per_layer): `ratio` is nominal
  int64_t budget_tokens = -1;     // an absolute budget in slots per head (-1: by ratio)
  int64_t budget_bytes = -1;      // an absolute budget in bytes (-1: none)
  CompressionPolicy policy;       // with the press's own decoding trigger when it has one (pyramid_merge)
  std::string decode_press = "none";
};

// Checks a plan without a model: unknown presses or options, ratios out of range, inconsistent
// policies. Throws ParameterError naming the field ("press", "ratio", "options", "policy.decode_interval"...).
PlanReport validate_plan(const CompressionPlan& plan);

struct GenerateParams {
  int64_t max_tokens = 128;
  SamplerOptions sampling;
  // Generation ends before the first occurrence of any of these; the text stops before it.
  std::vector<std::string> stop;
  // Streaming: called with each piece of text as it completes (UTF-8 safe, stop strings held
  // back until they are ruled out). Return false to stop (StopReason::Callback).
  std::function<bool(const std::string& piece)> on_text;
  // Set from any thread to stop: checked before every token and between the question's prefill
  // chunks (Engine::set_cancel_flag covers the context's prefill).
  const std::atomic<bool>* cancel = nullptr;
  bool ignore_eos = false;  // keep generating past end-of-generation tokens (benchmarks)
};

struct Timings {
  int64_t prompt_tokens = 0;     // evaluated for this answer (context included)
  int64_t generated_tokens = 0;
  double prefill_ms = 0.0;       // context (and question) evaluation, compression included
  double decode_ms = 0.0;
  double prefill_tok_s() const { return prefill_ms > 0 ? prompt_tokens * 1000.0 / prefill_ms : 0.0; }
  double decode_tok_s() const { return decode_ms > 0 ? generated_tokens * 1000.0 / decode_ms : 0.0; }
};

// What the cache holds, measured (bytes actually allocated, not a mask).
struct Accounting {
  size_t kv_bytes_held = 0;   // allocated for the runs
  size_t kv_bytes_used = 0;   // occupied by kept slots
  size_t kv_bytes_full = 0;   // what an uncompressed f16 cache of the same positions would hold
  int64_t context_tokens = 0;
  std::vector<std::vector<int64_t>> kv_lengths;  // [layer][kv head]: slots kept
  int64_t layer_compressions = 0;
  int64_t slots_removed = 0;
};

struct Completion {
  std::vector<int32_t> tokens;  // generated ids (the end-of-generation token excluded)
  // Bytes the cache's kept slots occupied once the question was in (after a query-aware
  // press compressed context and question), before the answer was decoded.
  size_t kv_bytes_used = 0;
  // The whole of what the cache held at that moment (a query-aware plan's compression of context
  // and question is in it; Engine::accounting() afterwards shows the context restored instead).
  Accounting prompt;
  std::string text;             // their text, cut before a stop string
  StopReason stop_reason = StopReason::MaxTokens;
  Timings timings;
};

class SharedPrefill;  // one prefill of a context, compressed for several plans (Engine::prefill_shared)

class SharedPrefill {
 public:
  ~SharedPrefill();
  double prefill_ms() const;     // the shared forward pass
  double compress_ms(size_t index) const;  // that plan's compression of its copy (0 when it has its own prefill)
  // Whether plans[index] is served by the shared pass (false: use_shared gives it a prefill of its own).
  bool shared(size_t index) const;
  size_t size() const;

 private:
  friend class Engine;
  SharedPrefill();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A context as prefilled (and compressed) by one engine, kept to start others from it without
// evaluating it again (a server answering many questions on one document). Immutable.
class ContextSnapshot {
 public:
  ~ContextSnapshot();
  const std::vector<int32_t>& tokens() const;
  size_t bytes_held() const;  // what the kept cache holds
  size_t bytes_full() const;  // what an uncompressed f16 cache of its positions would hold
  const PlanReport& plan() const;

 private:
  friend class Engine;
  ContextSnapshot();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class Engine {
 public:
  // `model` must outlive the engine. Throws ParameterError for bad options (ctx_size, chunk, threads).
  explicit Engine(const Model& model, const SessionOptions& options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // A flag any thread may set to stop the work in progress: prefill stops between chunks with
  // CancelledError (the context is dropped), generation stops with StopReason::Cancelled.
  void set_cancel_flag(const std::atomic<bool>* flag);
  // Throws ContextFullError (before any work) unless `tokens` positions fit the context size.
  void check_fits(int64_t tokens) const;

  // Validates and adopts the plan for the next context (the current one is dropped).
  const PlanReport& set_plan(const CompressionPlan& plan);
  const PlanReport& plan() const;

  // --- Context + questions (kvpress's pipeline): only the context is compressed.
  // The context's tokens: the chat template's part before the question (kvpress's split), or the
  // text itself with chat=false.
  std::vector<int32_t> context_ids(const std::string& context, bool chat = true) const;
  // A question's tokens after that context (the template's closing part included).
  std::vector<int32_t> question_ids(const std::string& context, const std::string& question, bool chat = true) const;
  // Evaluates the context (compressed as planned), with cache room for `reserve_tokens` more
  // (a question and its answer). Throws ContextFullError, before any work, when context +
  // reserve_tokens exceed the context size. Returns the milliseconds spent.
  double prefill_context(const std::vector<int32_t>& ids, int64_t reserve_tokens = 0);
  // One forward pass over the context serving several plans: a prefill-time press does not change
  // the pass that produced the cache (kvpress compresses each layer after its attention), so each
  // plan's compressed copy is taken from the same pass. Plans that cannot share it (compression
  // after every chunk or while decoding) get their own prefill when used; query-aware plans start
  // from the uncompressed copy. Returns the copies; use_shared() makes one of them the context.
  std::unique_ptr<SharedPrefill> prefill_shared(const std::vector<int32_t>& ids, const std::vector<CompressionPlan>& plans);
  // Adopts plans[index] and its copy as the context (each compressed copy can be used once; the
  // uncompressed one any number of times). Returns the plan as validated.
  const PlanReport& use_shared(SharedPrefill& shared, size_t index, int64_t reserve_tokens = 0);
  // Loads a prompt cache saved by save_prompt_cache instead of evaluating the context; its tokens
  // must be `ids` when ids is not empty. Returns the cached tokens.
  std::vector<int32_t> load_prompt_cache(const std::string& path, const std::vector<int32_t>& ids = {});
  // Compresses the current context now with the plan's press, under the plan's budget: for a
  // context loaded from a prompt cache (a prefill compresses as planned by itself). A loaded cache
  // carries no attention statistics, so the press must need none (ParameterError "press"
  // otherwise). Sliding-window layers are left alone. What was removed is freed, keeping room for
  // `reserve_tokens` more per run. Returns the milliseconds spent.
  double compress_context(int64_t reserve_tokens = 0);
  // Saves the context's (compressed) cache with its tokens; `meta_json` is free-form.
  void save_prompt_cache(const std::string& path, const std::string& meta_json = "") const;
  // Answers a question from the context, then restores the context (rolled back, or a copy when
  // decoding compression or query-aware compression changed it) for the next question.
  // keep_context=false skips the copy for the last question.
  Completion answer(const std::vector<int32_t>& question_ids, const GenerateParams& params = {}, bool keep_context = true);

  // Teacher forcing (perplexity, KL divergence): feeds `tokens` after the context and returns the
  // logits that predicted each one, n x n_vocab floats: the context's last logits, then those after
  // every token but the last. Decoding-time compression runs between the tokens as planned (one
  // token at a time then; otherwise one pass). The context is used up, as by generate().
  std::vector<float> teacher_force(const std::vector<int32_t>& tokens);

  // --- Plain generation: the prompt is the context (compressed as planned), then generation
  // continues it. An empty prompt continues from the last logits (a loaded cache).
  Completion generate(const std::vector<int32_t>& prompt, const GenerateParams& params = {});

  // --- One step at a time, for a server that interleaves sequences: each step is one prefill chunk
  // or one generated token, and the steps do exactly the work (and give exactly the results) of
  // prefill_context followed by generate({}) or answer(), so that a scheduler can run one step of
  // every active sequence in turn. Cancellation: just stop stepping (and destroy or reuse the engine).
  // begin_context: as prefill_context (same checks, throws before any work), without evaluating.
  void begin_context(const std::vector<int32_t>& ids, int64_t reserve_tokens = 0);
  // Evaluates the context's next chunk; true once the context is ready (compressed as planned).
  bool step_context();
  // Starts generating from the context: `question_ids` (empty: continue the context itself, as
  // generate({}) does) are evaluated after it uncompressed, a chunk per step, then one token per
  // step. The context is used up (no rollback). Query-aware plans compress each question with its
  // own press and are not stepped: ParameterError "query_aware".
  void begin_generation(const std::vector<int32_t>& question_ids, const GenerateParams& params);
  // One question chunk or one token (params.on_text streams the text); false once generation ended.
  bool step_generation();
  // One step_generation() of each of several engines of the same model (a server's decode step):
  // the engines whose step is one generated token, and whose plan does not compress while
  // decoding, evaluate their tokens together in one forward pass that reads the weights once
  // (continuous batching); the others step alone. results[i].more is what
  // engines[i]->step_generation() would have returned; an engine whose step failed gets its
  // exception in results[i].error and ends (the others go on).
  struct BatchStep {
    bool more = false;
    bool batched = false;  // its step went through the shared forward pass
    bool chunk = false;    // ... and was a prompt chunk (a context's or a question's), not a token
    std::exception_ptr error;
  };
  static std::vector<BatchStep> step_generation(const std::vector<Engine*>& engines);
  // One step of each of several engines of the same model, whichever phase each is in: a context
  // being prefilled (begin_context) advances one chunk as step_context() would, a generation one
  // step as step_generation() would. Prompt chunks join the decode tokens in the shared forward
  // pass when no press watches them: a question's chunks (unless the plan compresses while
  // decoding) and the chunks of a context the plan does not compress; the rest step alone. For an
  // engine in its context, results[i].more is true while the context is not ready yet (the
  // opposite of step_context()'s result); otherwise as step_generation(engines).
  static std::vector<BatchStep> step_batch(const std::vector<Engine*>& engines);
  // The tokens generated so far, and the logits the last one was sampled from (log-probabilities).
  const std::vector<int32_t>& generated_tokens() const;
  const std::vector<float>& last_token_logits() const;
  Completion finish_generation();
  // The current context, kept for other engines of the same model (not while stepping).
  std::shared_ptr<const ContextSnapshot> snapshot_context() const;
  // Starts from a snapshot instead of evaluating its tokens, under this engine's plan (which should
  // be the one that compressed it), with room for `reserve_tokens` more.
  void restore_context(const ContextSnapshot& snapshot, int64_t reserve_tokens = 0);

  // Milliseconds spent putting the current context in: its prefill, compression and finish().
  double context_ms() const;
  // The context tokens evaluated (or loaded) so far.
  const std::vector<int32_t>& context_tokens() const;
  Accounting accounting() const;
  const Model& model() const;
  // The low-level session (for the evaluation suite and presses' tests).
  Session& session();

 private:
  static std::vector<BatchStep> step_engines(const std::vector<Engine*>& engines, bool contexts);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvsqueeze
