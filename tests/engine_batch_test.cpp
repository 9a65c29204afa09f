// Engine::step_generation(engines): the decode tokens of several sequences in one forward pass
// (the server's continuous batching) must give every sequence exactly the tokens, text and cache it
// gets alone, whatever its neighbours: other prompts, other presses, sequences that end early, one
// that compresses while decoding (it steps alone), one with a quantized cache.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "kvsqueeze/engine.h"
#include "test_paths.h"

namespace kvsqueeze {
namespace {

const std::string kText =
    "Lily lived in a small house by the sea with her dog Max. Every morning they walked to the market, "
    "where the baker gave Max a bone. One day the baker was sick, so Lily baked bread for the whole town. "
    "The town was happy and Max got two bones.";

struct Case {
  size_t chars;  // of kText: the prompt
  CompressionPlan plan;
  int64_t max_tokens;
  KvType kv_type = KvType::F16;
};

// `other`: a second cache type (q8_0 needs head dimensions of 32 or more; stories260K has 8).
std::vector<Case> mixed_cases(KvType other) {
  CompressionPlan decoding{.press = "streaming_llm", .ratio = 0.5};
  decoding.policy.decode_interval = 4;
  decoding.policy.decode_target = 24;
  return {
      {kText.size(), {.press = "none"}, 20},
      {90, {.press = "snapkv", .ratio = 0.5}, 24},
      {140, {.press = "knorm", .ratio = 0.25}, 6},  // ends first: the batch shrinks
      {60, decoding, 16},                           // compresses while decoding: steps alone
      {120, {.press = "expected_attention", .ratio = 0.5}, 18, other},
      {kText.size(), {.press = "tova", .ratio = 0.5}, 24},
  };
}

SessionOptions options_for(const Case& c) {
  SessionOptions o;
  o.threads = 1;
  o.chunk = 32;
  o.kv_type_k = o.kv_type_v = c.kv_type;
  return o;
}

void expect_batched_equals_alone(const Model& model, const std::vector<Case>& cases, bool chat) {
  std::vector<Completion> alone;
  std::vector<Accounting> alone_acc;
  std::vector<std::unique_ptr<Engine>> engines;
  for (const Case& c : cases) {
    GenerateParams p;
    p.max_tokens = c.max_tokens;
    Engine e(model, options_for(c));
    e.set_plan(c.plan);
    const auto ids = e.context_ids(kText.substr(0, c.chars), chat);
    e.prefill_context(ids, p.max_tokens);
    alone.push_back(e.generate({}, p));
    alone_acc.push_back(e.accounting());

    auto b = std::make_unique<Engine>(model, options_for(c));
    b->set_plan(c.plan);
    b->begin_context(ids, p.max_tokens);
    while (!b->step_context()) {
    }
    b->begin_generation({}, p);
    engines.push_back(std::move(b));
  }
  std::vector<Engine*> running;
  for (auto& e : engines) running.push_back(e.get());
  int steps = 0;
  while (!running.empty()) {
    const auto results = Engine::step_generation(running);
    ASSERT_EQ(results.size(), running.size());
    std::vector<Engine*> next;
    for (size_t i = 0; i < running.size(); ++i) {
      ASSERT_FALSE(results[i].error) << "step " << steps << " of engine " << i;
      if (results[i].more) next.push_back(running[i]);
    }
    running = std::move(next);
    ASSERT_LT(++steps, 1000);
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i) + " press " + cases[i].plan.press);
    const Completion got = engines[i]->finish_generation();
    EXPECT_EQ(got.tokens, alone[i].tokens);
    EXPECT_EQ(got.text, alone[i].text);
    EXPECT_EQ(got.stop_reason, alone[i].stop_reason);
    EXPECT_FALSE(got.tokens.empty());
    const Accounting acc = engines[i]->accounting();
    EXPECT_EQ(acc.kv_lengths, alone_acc[i].kv_lengths);
    EXPECT_EQ(acc.kv_bytes_held, alone_acc[i].kv_bytes_held);
  }
}

TEST(EngineBatch, StoriesBatchedDecodeEqualsEachSequenceAlone) {
  const auto model = Model::load(test_paths::stories260k());
  expect_batched_equals_alone(*model, mixed_cases(KvType::BF16), false);
}

TEST(EngineBatch, SequencesOfOtherModelsAreAnError) {
  const auto a = Model::load(test_paths::stories260k());
  const auto b = Model::load(test_paths::stories260k());
  std::vector<std::unique_ptr<Engine>> engines;
  for (const Model* m : {a.get(), b.get()}) {
    auto e = std::make_unique<Engine>(*m, options_for({}));
    e->prefill_context(e->context_ids("Once upon a time", false), 8);
    GenerateParams p;
    p.max_tokens = 4;
    e->begin_generation({}, p);
    engines.push_back(std::move(e));
  }
  const auto results = Engine::step_generation({engines[0].get(), engines[1].get()});
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) {
    ASSERT_TRUE(r.error);
    EXPECT_THROW(std::rethrow_exception(r.error), Error);
  }
}

// The real default model: Q4_K/Q6_K weights go through the multi-row matmul kernels when
// sequences are batched, and the chat template's prompts are longer.
TEST(EngineBatchDefaultModel, BatchedDecodeEqualsEachSequenceAlone) {
  const std::string path = test_paths::default_model();
  if (path.empty()) GTEST_FAIL() << "the default model is missing: scripts/get_model.sh qwen2.5-0.5b-instruct";
  const auto model = Model::load(path);
  expect_batched_equals_alone(*model, mixed_cases(KvType::Q8_0), true);
}

}  // namespace
}  // namespace kvsqueeze
