// The engine's step interface (begin_context / step_context, begin_generation / step_generation,
// context snapshots): a server interleaves sequences one chunk or one token at a time, and must
// get exactly what prefill_context + generate / answer give.
#include <gtest/gtest.h>

#include "kvsqueeze/engine.h"
#include "test_paths.h"

namespace kvsqueeze {
namespace {

const std::string kContext =
    "Lily lived in a small house by the sea with her dog Max. Every morning they walked to the market, "
    "where the baker gave Max a bone. One day the baker was sick, so Lily baked bread for the whole town.";

const Model& stories() {
  static std::unique_ptr<Model> model = Model::load(test_paths::stories260k());
  return *model;
}

SessionOptions small_chunks() {
  SessionOptions o;
  o.threads = 1;
  o.chunk = 16;  // several chunks per context
  return o;
}

// Runs the context and generation by steps; returns the completion and counts the steps.
Completion stepped(Engine& e, const std::vector<int32_t>& context, const std::vector<int32_t>& question,
                   const GenerateParams& p, int* context_steps = nullptr, std::vector<int32_t>* seen = nullptr) {
  e.begin_context(context, static_cast<int64_t>(question.size()) + p.max_tokens);
  int n = 1;
  while (!e.step_context()) ++n;
  if (context_steps) *context_steps = n;
  e.begin_generation(question, p);
  while (e.step_generation()) {
  }
  if (seen) {
    *seen = e.generated_tokens();
    EXPECT_EQ(e.last_token_logits().size(), static_cast<size_t>(stories().config().n_vocab));
  }
  return e.finish_generation();
}

TEST(EngineSteps, SteppedGenerationEqualsPrefillThenGenerate) {
  for (const char* press : {"none", "snapkv", "knorm"}) {
    const CompressionPlan plan{.press = press, .ratio = std::string(press) == "none" ? 0.0 : 0.5};
    GenerateParams p;
    p.max_tokens = 24;
    Engine a(stories(), small_chunks());
    a.set_plan(plan);
    const auto ids = a.context_ids(kContext, false);
    a.prefill_context(ids, p.max_tokens);
    const Completion want = a.generate({}, p);
    const Accounting want_acc = a.accounting();

    Engine b(stories(), small_chunks());
    b.set_plan(plan);
    std::string streamed;
    GenerateParams q = p;
    q.on_text = [&](const std::string& s) { return streamed += s, true; };
    int chunks = 0;
    std::vector<int32_t> seen;
    const Completion got = stepped(b, ids, {}, q, &chunks, &seen);
    // One step per chunk (presses reading the last rows' attention keep them in one last chunk).
    if (std::string(press) == "none") {
      EXPECT_EQ(chunks, static_cast<int>((ids.size() + 15) / 16));
    }
    EXPECT_GE(chunks, 3) << press;
    EXPECT_EQ(got.tokens, want.tokens) << press;
    EXPECT_EQ(got.text, want.text) << press;
    EXPECT_EQ(streamed, want.text) << press;
    EXPECT_EQ(b.accounting().kv_lengths, want_acc.kv_lengths) << press;
    EXPECT_EQ(b.accounting().kv_bytes_held, want_acc.kv_bytes_held) << press;
    EXPECT_EQ(seen, want.tokens);
  }
}

TEST(EngineSteps, SteppedQuestionEqualsAnswerAndStopsTheSame) {
  const CompressionPlan plan{.press = "snapkv", .ratio = 0.4};
  GenerateParams p;
  p.max_tokens = 30;
  p.stop = {"."};
  Engine a(stories(), small_chunks());
  a.set_plan(plan);
  const auto ids = a.context_ids(kContext, false);
  const auto question = a.question_ids(kContext, " Lily and Max went", false);
  a.prefill_context(ids, static_cast<int64_t>(question.size()) + p.max_tokens);
  const Completion want = a.answer(question, p);

  Engine b(stories(), small_chunks());
  b.set_plan(plan);
  const Completion got = stepped(b, ids, question, p);
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.text, want.text);
  EXPECT_EQ(got.stop_reason, want.stop_reason);
  EXPECT_EQ(got.timings.prompt_tokens, want.timings.prompt_tokens);
}

TEST(EngineSteps, ARestoredSnapshotAnswersAsTheContextItWasTakenFrom) {
  const CompressionPlan plan{.press = "snapkv", .ratio = 0.5};
  GenerateParams p;
  p.max_tokens = 16;
  Engine a(stories(), small_chunks());
  a.set_plan(plan);
  const auto ids = a.context_ids(kContext, false);
  const auto question = a.question_ids(kContext, " The baker", false);
  a.prefill_context(ids, 64);
  const auto snap = a.snapshot_context();
  EXPECT_EQ(snap->tokens(), ids);
  EXPECT_LT(snap->bytes_held(), snap->bytes_full());  // compressed, slack not copied
  const Completion want = a.answer(question, p);

  Engine b(stories(), small_chunks());
  b.set_plan(plan);
  b.restore_context(*snap, 64);
  b.begin_generation(question, p);
  while (b.step_generation()) {
  }
  const Completion got = b.finish_generation();
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.text, want.text);
}

TEST(EngineSteps, MisuseAndCancellationAreClearErrors) {
  Engine e(stories(), small_chunks());
  EXPECT_THROW(e.step_context(), Error);
  EXPECT_THROW(e.begin_generation({1}, {}), Error);  // no context
  EXPECT_THROW(e.finish_generation(), Error);
  SessionOptions tiny = small_chunks();
  tiny.ctx_size = 8;
  Engine f(stories(), tiny);
  EXPECT_THROW(f.begin_context(std::vector<int32_t>(9, 1)), ContextFullError);
  // Stopping half way through a context and starting another leaves nothing behind.
  const auto ids = e.context_ids(kContext, false);
  e.begin_context(ids);
  EXPECT_FALSE(e.step_context());
  e.begin_context(ids);
  while (!e.step_context()) {
  }
  EXPECT_EQ(e.accounting().kv_bytes_full, ids.size() * static_cast<size_t>(stories().config().kv_bytes_per_token_f16()));
  e.set_plan({.press = "finch", .ratio = 0.5});
  e.prefill_context(ids);
  try {
    e.begin_generation({1}, {});
    ADD_FAILURE();
  } catch (const ParameterError& err) {
    EXPECT_EQ(err.parameter(), "query_aware");
  }
}

}  // namespace
}  // namespace kvsqueeze
