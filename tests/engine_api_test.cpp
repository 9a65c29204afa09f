// The engine API (include/kvsqueeze/engine.h): plans validated once with typed errors naming the
// field, the context + questions flow against the same steps done by hand on the low-level
// session, stop strings, streaming callbacks, cancellation, prompt caches and accounting.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>

#include "kvsqueeze/cache_file.h"
#include "kvsqueeze/engine.h"
#include "kvsqueeze/press_pipeline.h"
#include "test_paths.h"

namespace kvsqueeze {
namespace {

const std::string kContext =
    "Lily lived in a small house by the sea with her dog Max. Every morning they walked to the market, "
    "where the baker gave Max a bone. One day the baker was sick, so Lily baked bread for the whole town. "
    "Max carried the basket and everyone said thank you. The sea was blue and the sun was warm.";

std::unique_ptr<Model>& stories() {
  static std::unique_ptr<Model> model = Model::load(test_paths::stories260k());
  return model;
}

SessionOptions one_thread(int64_t chunk = 512) {
  SessionOptions o;
  o.threads = 1;
  o.chunk = chunk;
  return o;
}

std::string parameter_of(const CompressionPlan& plan) {
  try {
    validate_plan(plan);
  } catch (const ParameterError& e) {
    return e.parameter();
  }
  return "(accepted)";
}

TEST(EngineApi, PlansAreValidatedOnceAndErrorsNameTheField) {
  EXPECT_EQ(parameter_of({.press = "snapkv", .ratio = 1.5}), "ratio");
  EXPECT_EQ(parameter_of({.press = "none", .ratio = 0.5}), "ratio");
  EXPECT_EQ(parameter_of({.press = "nosuch", .ratio = 0.5}), "press");
  EXPECT_EQ(parameter_of({.press = "snapkv", .ratio = 0.5, .options = {"window_sise=8"}}), "press");
  EXPECT_EQ(parameter_of({.press = "snapkv", .ratio = 0.5, .options = {"=8"}}), "options");
  EXPECT_EQ(parameter_of({.press = "none", .query_aware = true}), "query_aware");
  CompressionPlan p{.press = "snapkv", .ratio = 0.5};
  p.policy.decode_interval = 4;  // no target
  EXPECT_EQ(parameter_of(p), "decode_interval");
  p = {.press = "knorm", .ratio = 0.5, .decode_options = {"window_size=4"}};
  EXPECT_EQ(parameter_of(p), "decode_options");
  // The message names the field in backticks, never a CLI flag.
  try {
    validate_plan({.press = "snapkv", .ratio = 2.0});
    ADD_FAILURE();
  } catch (const ParameterError& e) {
    EXPECT_NE(std::string(e.what()).find("`ratio` must be in [0, 1)"), std::string::npos) << e.what();
  }
  const PlanReport finch = validate_plan({.press = "finch", .ratio = 0.5});
  EXPECT_TRUE(finch.query_aware);  // finch only exists query-aware
  const PlanReport pyramid = validate_plan({.press = "pyramid_merge"});
  EXPECT_TRUE(pyramid.policy.decoding());  // its method also compresses while decoding
  EXPECT_EQ(pyramid.decode_press, "pyramid_merge");
  EXPECT_EQ(validate_plan({.press = "knorm", .options = {"budget=16"}}).budget_tokens, 16);
}

TEST(EngineApi, ModelErrorsAreTyped) {
  EXPECT_THROW(Model::load("/nonexistent/model.gguf"), FileError);
  const std::string bad = (std::filesystem::temp_directory_path() / "kvsq-engine-corrupt.gguf").string();
  std::ofstream(bad) << "GGUF this is not a model";
  EXPECT_THROW(Model::load(bad), ModelError);
  std::filesystem::remove(bad);
}

// The engine's answers are those of the low-level steps: prefill through a press runner, then
// each question generated and rolled back.
TEST(EngineApi, AnswersMatchTheSessionStepsAndTheContextIsKept) {
  const Model& model = *stories();
  const std::vector<std::string> questions = {"Who baked bread?", "What did Max carry?"};
  Engine engine(model, one_thread(32));
  engine.set_plan({.press = "snapkv", .ratio = 0.5});
  const auto context = engine.context_ids(kContext);
  engine.prefill_context(context, 64);
  const Accounting after_prefill = engine.accounting();
  int64_t kept = 0, heads = 0;
  for (const auto& layer : after_prefill.kv_lengths)
    for (int64_t len : layer) kept += len, ++heads;
  const Budget half{0.5, -1};
  EXPECT_EQ(kept, heads * half.keep(static_cast<int64_t>(context.size())));  // half of every run
  EXPECT_EQ(after_prefill.context_tokens, static_cast<int64_t>(context.size()));
  GenerateParams params;
  params.max_tokens = 12;
  std::vector<Completion> answers;
  for (const auto& q : questions) answers.push_back(engine.answer(engine.question_ids(kContext, q), params));
  // The context is back as it was after each answer.
  EXPECT_EQ(engine.accounting().kv_lengths, after_prefill.kv_lengths);
  // A repeated question gets the same answer from the restored context.
  EXPECT_EQ(engine.answer(engine.question_ids(kContext, questions[0]), params).tokens, answers[0].tokens);

  Session session(model, one_thread(32));
  std::unique_ptr<Press> press = make_press("snapkv", {});
  PressRunner runner(session, press.get(), Budget{0.5, -1}, nullptr, {});
  runner.prefill(context, 64);
  const int32_t end = session.next_position();
  session.cache().protect_query_position(end);
  runner.start_decoding();
  for (size_t i = 0; i < questions.size(); ++i) {
    Sampler sampler(params.sampling);
    const GenerationResult r = generate(session, engine.question_ids(kContext, questions[i]), params.max_tokens, sampler);
    EXPECT_EQ(r.tokens, answers[i].tokens) << questions[i];
    EXPECT_EQ(r.text, answers[i].text);
    session.rollback_to(end);
  }
  EXPECT_GT(answers[0].timings.prompt_tokens, static_cast<int64_t>(context.size()));
}

// Decoding-time and query-aware compression change the context: each answer starts from a copy.
TEST(EngineApi, ForkedContextsGiveRepeatableAnswers) {
  for (CompressionPlan plan : {CompressionPlan{.press = "snapkv", .ratio = 0.5, .query_aware = true},
                               CompressionPlan{.press = "knorm", .ratio = 0.25}}) {
    if (!plan.query_aware) {
      plan.policy.decode_interval = 2;
      plan.policy.decode_target = 24;
    }
    Engine engine(*stories(), one_thread(32));
    engine.set_plan(plan);
    engine.prefill_context(engine.context_ids(kContext), 64);
    const auto q = engine.question_ids(kContext, "Where did Lily live?");
    GenerateParams params;
    params.max_tokens = 10;
    const Completion first = engine.answer(q, params);
    const Completion again = engine.answer(q, params, /*keep_context=*/false);
    EXPECT_EQ(first.tokens, again.tokens) << plan.press;
    EXPECT_GT(engine.accounting().layer_compressions, 0) << plan.press;
    EXPECT_THROW(engine.answer(q, params), Error);  // the last answer used the context up
  }
}

TEST(EngineApi, StopStringsCutTheTextAndStreamingHoldsThemBack) {
  Engine engine(*stories(), one_thread());
  const auto prompt = engine.context_ids("Once upon a time", /*chat=*/false);
  GenerateParams params;
  params.max_tokens = 40;
  engine.prefill_context(prompt);
  const Completion full = engine.generate({}, params);
  ASSERT_GT(full.text.size(), 20u);
  EXPECT_EQ(full.stop_reason, StopReason::MaxTokens);
  // A stop string from the middle of the text: the text ends right before it.
  const std::string stop = full.text.substr(12, 5);
  const size_t at = full.text.find(stop);
  std::string streamed;
  params.stop = {"never appears in it", stop};
  params.on_text = [&](const std::string& piece) { return streamed += piece, true; };
  engine.prefill_context(prompt);
  const Completion cut = engine.generate({}, params);
  EXPECT_EQ(cut.stop_reason, StopReason::StopString);
  EXPECT_EQ(cut.text, full.text.substr(0, at));
  EXPECT_EQ(streamed, cut.text);  // nothing of the stop string was streamed
  EXPECT_LT(cut.tokens.size(), full.tokens.size());
  // The callback stops generation by returning false.
  int pieces = 0;
  params.stop.clear();
  params.on_text = [&](const std::string&) { return ++pieces < 3; };
  engine.prefill_context(prompt);
  const Completion stopped = engine.generate({}, params);
  EXPECT_EQ(stopped.stop_reason, StopReason::Callback);
  EXPECT_EQ(pieces, 3);
  EXPECT_LT(stopped.tokens.size(), full.tokens.size());
}

TEST(EngineApi, CancelStopsPrefillAndGeneration) {
  Engine engine(*stories(), one_thread(/*chunk=*/16));
  engine.set_plan({.press = "snapkv", .ratio = 0.5});
  const auto context = engine.context_ids(kContext);
  ASSERT_GT(context.size(), 32u);
  std::atomic<bool> cancel{true};
  engine.set_cancel_flag(&cancel);
  EXPECT_THROW(engine.prefill_context(context), CancelledError);
  EXPECT_EQ(engine.session().next_position(), 0);  // no half context
  EXPECT_THROW(engine.answer(engine.question_ids(kContext, "Who?")), Error);
  cancel = false;
  engine.prefill_context(context);
  GenerateParams params;
  params.max_tokens = 8;
  const Completion a = engine.answer(engine.question_ids(kContext, "Who?"), params);
  EXPECT_EQ(a.stop_reason, StopReason::MaxTokens);
  std::atomic<bool> stop_now{true};
  params.cancel = &stop_now;
  const Completion b = engine.answer(engine.question_ids(kContext, "Who?"), params);
  EXPECT_EQ(b.stop_reason, StopReason::Cancelled);
  EXPECT_TRUE(b.tokens.empty());
}

TEST(EngineApi, PromptCachesRoundTripThroughTheEngine) {
  const std::string path = (std::filesystem::temp_directory_path() / "kvsq-engine-cache.kvc").string();
  GenerateParams params;
  params.max_tokens = 10;
  Engine a(*stories(), one_thread());
  a.set_plan({.press = "expected_attention", .ratio = 0.5});
  const auto context = a.context_ids(kContext);
  a.prefill_context(context, 32);
  a.save_prompt_cache(path, "{\"note\":\"test\"}");
  const auto q = a.question_ids(kContext, "Who had a dog?");
  const Completion from_prefill = a.answer(q, params);

  Engine b(*stories(), one_thread());
  EXPECT_EQ(b.load_prompt_cache(path, context), context);
  EXPECT_EQ(b.accounting().kv_lengths, a.accounting().kv_lengths);
  EXPECT_EQ(b.answer(q, params).tokens, from_prefill.tokens);
  std::vector<int32_t> other = context;
  other.back() += 1;
  try {
    b.load_prompt_cache(path, other);
    ADD_FAILURE() << "a mismatching prompt was accepted";
  } catch (const ParameterError& e) {
    EXPECT_NE(std::string(e.what()).find("does not match the cached tokens"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}

// A loaded context compressed afterwards equals the same press applied at prefill, for a press
// that scores from the cache alone; one that needs attention statistics is refused.
TEST(EngineApi, LoadedContextsCompressLikeAPrefill) {
  const std::string path = (std::filesystem::temp_directory_path() / "kvsq-engine-loaded.kvc").string();
  Engine full(*stories(), one_thread());
  const auto context = full.context_ids(kContext);
  full.prefill_context(context);
  full.save_prompt_cache(path);

  Engine at_prefill(*stories(), one_thread());
  at_prefill.set_plan({.press = "knorm", .ratio = 0.5});
  at_prefill.prefill_context(context);
  Engine loaded(*stories(), one_thread());
  loaded.set_plan({.press = "knorm", .ratio = 0.5});
  loaded.load_prompt_cache(path, context);
  const size_t before = loaded.accounting().kv_bytes_held;
  loaded.compress_context(0);
  const Accounting a = loaded.accounting();
  EXPECT_EQ(a.kv_lengths, at_prefill.accounting().kv_lengths);
  EXPECT_LT(a.kv_bytes_held, before * 6 / 10);
  EXPECT_GT(a.slots_removed, 0);
  const auto q = loaded.question_ids(kContext, "Who had a dog?");
  GenerateParams params;
  params.max_tokens = 8;
  EXPECT_EQ(loaded.answer(q, params).tokens, at_prefill.answer(q, params).tokens);

  Engine needs_stats(*stories(), one_thread());
  needs_stats.set_plan({.press = "snapkv", .ratio = 0.5});
  needs_stats.load_prompt_cache(path, context);
  try {
    needs_stats.compress_context(0);
    ADD_FAILURE() << "a press needing attention statistics compressed a loaded context";
  } catch (const ParameterError& e) {
    EXPECT_EQ(e.parameter(), "press");
  }
  std::filesystem::remove(path);
}

// Teacher forcing returns the logits that predicted each token: the context's last, then the
// session's own logits over the continuation.
TEST(EngineApi, TeacherForcingGivesThePredictingLogits) {
  Engine engine(*stories(), one_thread());
  const auto context = engine.context_ids(kContext);
  const std::vector<int32_t> continuation = {context[5], context[9], context[2], context[7]};
  engine.prefill_context(context);
  const std::vector<float> last = engine.session().last_logits();
  const std::vector<float> got = engine.teacher_force(continuation);
  const size_t V = last.size();
  ASSERT_EQ(got.size(), continuation.size() * V);
  EXPECT_TRUE(std::equal(last.begin(), last.end(), got.begin()));

  Session by_hand(*stories(), one_thread());
  by_hand.eval(context);
  std::vector<float> all;
  by_hand.eval(std::vector<int32_t>(continuation.begin(), continuation.end() - 1), &all);
  ASSERT_EQ(all.size(), (continuation.size() - 1) * V);
  for (size_t i = 0; i < all.size(); ++i) ASSERT_NEAR(got[V + i], all[i], 1e-5f) << i;
  EXPECT_THROW(engine.teacher_force(continuation), Error);  // the context was used up
}

TEST(EngineApi, ContextsThatDoNotFitAreOneTypedError) {
  SessionOptions small = one_thread();
  small.ctx_size = 16;
  Engine engine(*stories(), small);
  const auto context = engine.context_ids(kContext);
  try {
    engine.prefill_context(context);
    ADD_FAILURE() << "no error";
  } catch (const ContextFullError& e) {
    EXPECT_EQ(e.parameter(), "ctx_size");
    EXPECT_NE(std::string(e.what()).find("`ctx_size`"), std::string::npos) << e.what();
  }
  SessionOptions bad = one_thread();
  bad.chunk = 0;
  try {
    Engine broken(*stories(), bad);
    ADD_FAILURE() << "no error";
  } catch (const ParameterError& e) {
    EXPECT_EQ(e.parameter(), "chunk");
  }
}

}  // namespace
}  // namespace kvsqueeze
