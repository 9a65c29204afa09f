// Engine::step_generation(engines) / step_batch(engines): the decode tokens (and prompt chunks) of several sequences in one forward pass
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

// Engine::step_batch: sequences in every phase step together. Each joins a few steps after the
// previous one, so context chunks, question chunks and decode tokens share passes; every sequence
// must end with what it gets stepped alone.
struct PhaseCase {
  Case c;
  std::string question;  // empty: continue the context itself
};

Completion stepped_alone(const Model& model, const PhaseCase& pc, const std::vector<int32_t>& ids,
                         const std::vector<int32_t>& q, Accounting& acc) {
  Engine e(model, options_for(pc.c));
  e.set_plan(pc.c.plan);
  GenerateParams p;
  p.max_tokens = pc.c.max_tokens;
  e.begin_context(ids, static_cast<int64_t>(q.size()) + p.max_tokens);
  while (!e.step_context()) {
  }
  e.begin_generation(q, p);
  while (e.step_generation()) {
  }
  acc = e.accounting();
  return e.finish_generation();
}

void expect_phases_batched_equal_alone(const Model& model, const std::vector<PhaseCase>& cases, bool chat) {
  struct Running {
    std::unique_ptr<Engine> engine;
    std::vector<int32_t> ids, question;
    bool started = false, generating = false, done = false;
  };
  std::vector<Running> seqs;
  std::vector<Completion> alone;
  std::vector<Accounting> alone_acc;
  for (const PhaseCase& pc : cases) {
    Running r;
    r.engine = std::make_unique<Engine>(model, options_for(pc.c));
    r.engine->set_plan(pc.c.plan);
    const std::string context = kText.substr(0, pc.c.chars);
    r.ids = r.engine->context_ids(context, chat);
    if (!pc.question.empty()) r.question = r.engine->question_ids(context, pc.question, chat);
    alone_acc.emplace_back();
    alone.push_back(stepped_alone(model, pc, r.ids, r.question, alone_acc.back()));
    seqs.push_back(std::move(r));
  }
  int steps = 0, shared_chunk_steps = 0;
  for (;;) {
    std::vector<size_t> idx;
    std::vector<Engine*> running;
    for (size_t i = 0; i < seqs.size(); ++i) {
      Running& r = seqs[i];
      if (!r.started && steps >= 3 * static_cast<int>(i)) {
        r.engine->begin_context(r.ids, static_cast<int64_t>(r.question.size()) + cases[i].c.max_tokens);
        r.started = true;
      }
      if (r.started && !r.done) {
        idx.push_back(i);
        running.push_back(r.engine.get());
      }
    }
    if (running.empty()) break;
    const auto results = Engine::step_batch(running);
    ASSERT_EQ(results.size(), running.size());
    int chunks = 0, batched = 0;
    for (size_t j = 0; j < running.size(); ++j) {
      Running& r = seqs[idx[j]];
      ASSERT_FALSE(results[j].error) << "step " << steps << " of engine " << idx[j];
      batched += results[j].batched;
      chunks += results[j].batched && results[j].chunk;
      if (!r.generating) {
        if (!results[j].more) {
          GenerateParams p;
          p.max_tokens = cases[idx[j]].c.max_tokens;
          r.engine->begin_generation(r.question, p);
          r.generating = true;
        }
      } else if (!results[j].more) {
        r.done = true;
      }
    }
    if (chunks > 0 && batched > chunks) ++shared_chunk_steps;  // a prompt chunk beside another sequence's token
    ASSERT_LT(++steps, 2000);
  }
  EXPECT_GT(shared_chunk_steps, 0) << "no prompt chunk ever shared a pass with a decode token";
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i) + " press " + cases[i].c.plan.press);
    const Completion got = seqs[i].engine->finish_generation();
    EXPECT_EQ(got.tokens, alone[i].tokens);
    EXPECT_EQ(got.text, alone[i].text);
    EXPECT_EQ(got.stop_reason, alone[i].stop_reason);
    EXPECT_FALSE(got.tokens.empty());
    const Accounting acc = seqs[i].engine->accounting();
    EXPECT_EQ(acc.kv_lengths, alone_acc[i].kv_lengths);
    EXPECT_EQ(acc.kv_bytes_held, alone_acc[i].kv_bytes_held);
  }
}

std::vector<PhaseCase> phase_cases(KvType other) {
  auto cases = mixed_cases(other);
  return {
      {cases[0], ""},                           // no press: its context chunks join the pass
      {cases[1], " Who baked the bread?"},      // snapkv: context alone, question chunks batched
      {cases[2], ""},
      {cases[3], " What did Max get?"},         // compresses while decoding: everything alone
      {cases[4], " Where did Lily live?"},
      {{kText.size(), {.press = "none"}, 12}, " Who was sick?"},  // both prompts batched
  };
}

TEST(EngineBatch, StoriesPromptChunksBatchedWithDecodeEqualEachSequenceAlone) {
  const auto model = Model::load(test_paths::stories260k());
  expect_phases_batched_equal_alone(*model, phase_cases(KvType::BF16), false);
}

// A long decode (200 tokens) that a long prompt joins, in chunks of 16, at one step or another: the
// decode must give the tokens it gives alone wherever the chunks land (the server's case; a
// near-tie of this tiny model flips if the chunks' rows change the decode row's numbers).
TEST(EngineBatch, LongDecodeEqualsAloneWhereverAPromptsChunksJoin) {
  const auto model = Model::load(test_paths::stories260k());
  SessionOptions o;
  o.threads = 1;
  o.chunk = 16;
  GenerateParams p;
  p.max_tokens = 200;
  Engine alone(*model, o);
  const auto ids = alone.context_ids(kText.substr(0, 40), false);
  alone.prefill_context(ids, p.max_tokens);
  const Completion want = alone.generate({}, p);
  const auto long_ids = alone.context_ids(kText + " " + kText, false);
  for (int join = 1; join <= 190; join += 9) {
    SCOPED_TRACE("the prompt joins at step " + std::to_string(join));
    Engine a(*model, o), b(*model, o);
    a.begin_context(ids, p.max_tokens);
    std::vector<Engine*> running{&a};
    bool a_generating = false, b_started = false, b_generating = false, a_done = false;
    for (int step = 0; !a_done; ++step) {
      if (!b_started && step == join) {
        b.begin_context(long_ids, 12);
        running.push_back(&b);
        b_started = true;
      }
      const auto results = Engine::step_batch(running);
      std::vector<Engine*> next;
      for (size_t i = 0; i < running.size(); ++i) {
        ASSERT_FALSE(results[i].error);
        Engine* e = running[i];
        bool& generating = e == &a ? a_generating : b_generating;
        if (!generating && !results[i].more) {
          GenerateParams q;
          q.max_tokens = e == &a ? 200 : 12;
          e->begin_generation({}, q);
          generating = true;
          next.push_back(e);
        } else if (results[i].more) {
          next.push_back(e);
        } else if (e == &a) {
          a_done = true;
        }
      }
      running = std::move(next);
      ASSERT_LT(step, 1000);
    }
    EXPECT_EQ(a.finish_generation().tokens, want.tokens);
  }
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

TEST(EngineBatchDefaultModel, NineSequencesDecodeEqualEachAlone) {
  // From 8 decode tokens a step's products could take the prompt kernels; they must not (Backend::
  // matmul): nine sequences still decode exactly as each does alone.
  const std::string path = test_paths::default_model();
  if (path.empty()) GTEST_FAIL() << "the default model is missing: scripts/get_model.sh qwen2.5-0.5b-instruct";
  const auto model = Model::load(path);
  auto cases = mixed_cases(KvType::Q8_0);
  for (size_t chars : {70, 110, 150, 180}) cases.push_back({chars, {.press = "none"}, 16});
  expect_batched_equals_alone(*model, cases, true);
}

TEST(EngineBatchDefaultModel, PromptChunksBatchedWithDecodeEqualEachSequenceAlone) {
  const std::string path = test_paths::default_model();
  if (path.empty()) GTEST_FAIL() << "the default model is missing: scripts/get_model.sh qwen2.5-0.5b-instruct";
  const auto model = Model::load(path);
  expect_phases_batched_equal_alone(*model, phase_cases(KvType::Q8_0), true);
}

}  // namespace
}  // namespace kvsqueeze
