// Where compression happens: chunked prefill with compression between chunks, decoding-time
// compression (interval/target and ratio of the positions seen), absolute budgets, forks for
// several questions, press expressions and their errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"
#include "kvsqueeze/press_pipeline.h"
#include "kvsqueeze/session.h"
#include "test_paths.h"

using namespace kvsqueeze;

namespace {

std::vector<int32_t> prompt_ids(const Model& m, int n) {
  std::string text;
  while (static_cast<int>(m.tokenizer().encode(text, true).size()) < n)
    text += "Once upon a time there was a little girl named Lily. She loved to play outside with her dog. ";
  auto ids = m.tokenizer().encode(text, true);
  ids.resize(static_cast<size_t>(n));
  return ids;
}

int32_t argmax(const std::vector<float>& v) { return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin()); }

int64_t max_len(const KvCache& c) {
  int64_t m = 0;
  for (const auto& layer : c.lengths())
    for (int64_t len : layer) m = std::max(m, len);
  return m;
}

// Feeds `ids` to the runner `chunk` tokens at a time, calling after_chunk() after each, so that
// the test sees the cache between chunks.
void prefill_by_chunks(PressRunner& runner, const std::vector<int32_t>& ids, size_t chunk, const std::function<void()>& after_chunk) {
  for (size_t at = 0; at < ids.size(); at += chunk) {
    const auto end = std::min(ids.size(), at + chunk);
    runner.prefill(std::vector<int32_t>(ids.begin() + static_cast<long>(at), ids.begin() + static_cast<long>(end)), 0);
    after_chunk();
  }
}

// Starts decoding and generates `steps` greedy tokens, calling after_step(step) after each.
void decode_greedily(Session& s, PressRunner& runner, int steps, const std::function<void(int step)>& after_step) {
  runner.start_decoding();
  std::vector<float> logits = s.last_logits();
  for (int step = 0; step < steps; ++step) {
    logits = s.eval({argmax(logits)});
    after_step(step);
  }
}

// Decoding-time compression alone: prefills `ids` whole (no prefill press), then decodes greedily
// with `decode_press` compressing under `policy`.
void decode_compressing(Session& s, const std::vector<int32_t>& ids, Press& decode_press, const CompressionPolicy& policy, int steps,
                        const std::function<void(int step)>& after_step) {
  PressRunner runner(s, nullptr, Budget{}, &decode_press, policy);
  runner.prefill(ids, 0);
  EXPECT_EQ(max_len(s.cache()), static_cast<int64_t>(ids.size()));  // no prefill press: the context is whole
  decode_greedily(s, runner, steps, after_step);
}

}  // namespace

TEST(PressPipeline, ChunkedPrefillCompressionBoundsThePeakCache) {
  auto model = Model::load(test_paths::stories260k());
  const auto ids = prompt_ids(*model, 200);
  Session s(*model, {.chunk = 16, .threads = 1});
  auto press = make_press("knorm");
  const CompressionPolicy policy{.every_chunk = true};
  const Budget budget{0.0, 40};
  int64_t peak = 0;
  {
    PressRunner runner(s, press.get(), budget, nullptr, policy);
    prefill_by_chunks(runner, ids, 16, [&] {
      peak = std::max(peak, max_len(s.cache()));
      EXPECT_LE(max_len(s.cache()), 40);
    });
    EXPECT_GT(runner.compressions(), 5 * 10);
  }
  EXPECT_EQ(peak, 40);
  for (const auto& layer : s.cache().lengths())
    for (int64_t len : layer) EXPECT_EQ(len, 40);
  // The kept slots keep their original positions (new tokens continue from the uncompressed length).
  EXPECT_EQ(s.next_position(), 200);
}

TEST(PressPipeline, ChunkedPrefillWithARatioKeepsThatShareOfEverythingSeen) {
  auto model = Model::load(test_paths::stories260k());
  const auto ids = prompt_ids(*model, 150);
  Session s(*model, {.chunk = 32, .threads = 1});
  auto press = make_press("keydiff");
  const CompressionPolicy policy{.every_chunk = true};
  PressRunner runner(s, press.get(), Budget{0.5}, nullptr, policy);
  runner.prefill(ids, 0);
  for (const auto& layer : s.cache().lengths())
    for (int64_t len : layer) EXPECT_EQ(len, 75);
}

TEST(PressPipeline, DecodingCompressionOscillatesBetweenTargetAndTargetPlusInterval) {
  auto model = Model::load(test_paths::stories260k());
  const auto ids = prompt_ids(*model, 40);
  Session s(*model, {.threads = 1});
  auto press = make_press("streaming_llm");
  int compressions_seen = 0;
  decode_compressing(s, ids, *press, {.decode_interval = 10, .decode_target = 30}, 120, [&](int step) {
    const int64_t len = max_len(s.cache());
    const int64_t steps_since = (s.next_position() - 40) % 10;
    if (steps_since == 0) {
      EXPECT_EQ(len, 30) << "step " << step;  // compressed back to the target at every interval
      ++compressions_seen;
    }
    EXPECT_LE(len, step < 10 ? 50 : 40) << "step " << step;  // context + one interval, then target + interval
    // Memory follows: room for at most the next interval is held beyond the kept slots.
    if (step >= 9) {
      EXPECT_LE(s.cache().bytes_held(), static_cast<size_t>(5 * 4 * 41) * (s.cache().k_row_bytes() + s.cache().v_row_bytes() + 4));
    }
  });
  EXPECT_EQ(compressions_seen, 12);
  // StreamingLLM in decoding: the 4 sinks and the most recent slots.
  const auto pos = s.cache().positions(2, 1);
  EXPECT_EQ(pos[3], 3);
  EXPECT_EQ(pos.back(), s.next_position() - 1);
}

TEST(PressPipeline, RatioDecodingKeepsAShareOfThePositionsSeen) {
  auto model = Model::load(test_paths::stories260k());
  const auto ids = prompt_ids(*model, 20);
  Session s(*model, {.threads = 1});
  auto press = make_press("knorm");
  decode_compressing(s, ids, *press, {.decode_interval = 8, .decode_ratio = 0.5}, 64, [&](int step) {
    if ((s.next_position() - 20) % 8 == 0) {
      EXPECT_EQ(max_len(s.cache()), s.next_position() / 2) << "step " << step;
    }
  });
}

TEST(PressPipeline, PolicyAndExpressionErrorsAreClear) {
  CompressionPolicy p;
  p.decode_interval = 4;
  EXPECT_THROW(p.validate(), Error);  // no target
  p.decode_target = 10;
  EXPECT_NO_THROW(p.validate());
  p.decode_ratio = 0.5;
  EXPECT_THROW(p.validate(), Error);  // both
  CompressionPolicy q;
  q.decode_target = 3;
  EXPECT_THROW(q.validate(), Error);  // no interval
  for (const char* bad : {"snapkv(", "snapkv)", "(snapkv", "snapkv(window_size=)", "", "snap kv", "knorm(snapkv)", "nosuch(knorm)"})
    EXPECT_THROW(make_press(bad), Error) << bad;
  EXPECT_NO_THROW(make_press("snapkv(window_size=8, kernel_size=3)"));
  EXPECT_THROW(make_press("snapkv", {"knorm.foo=1"}), Error);  // no knorm in the expression
  try {
    make_press("snapkv(window_size=0)");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("window_size"), std::string::npos) << e.what();
  }
}

TEST(PressPipeline, CliAbsoluteBudgetsDecodingAndForks) {
  const std::string base = "generate -m " + test_paths::stories260k() +
                           " -p 'Once upon a time there was a little girl named Lily. She loved to play outside with her dog.' --json -t 1";
  const CliResult tokens = run_cli(base + " -n 0 --press snapkv --press-opt window_size=4 --press-opt budget=10");
  ASSERT_EQ(tokens.status, 0) << tokens.err;
  const auto jt = nlohmann::json::parse(tokens.out);  // (a temporary would die before the loop)
  for (const auto& layer : jt["kv_lengths"])
    for (const auto& len : layer) EXPECT_EQ(len.get<int64_t>(), 10);
  // A byte budget: K+V+position bytes of the compressed layers fit in it.
  const CliResult bytes = run_cli(base + " -n 0 --press knorm --press-opt budget_bytes=20000");
  ASSERT_EQ(bytes.status, 0) << bytes.err;
  const auto jb = nlohmann::json::parse(bytes.out);
  EXPECT_LE(jb["kv_bytes_held"].get<int64_t>(), 20000);
  EXPECT_GT(jb["kv_bytes_held"].get<int64_t>(), 20000 - 5 * 4 * (2 * 8 * 2 + 4));  // within one slot per run
  // Several questions with decoding-time compression: each answer is what it would be alone.
  const std::string qa = " -n 24 --decode-press knorm --decode-interval 5 --decode-target 12";
  const CliResult both = run_cli(base + qa + " -q 'Who?' -q 'Where?'");
  const CliResult second = run_cli(base + qa + " -q 'Where?'");
  ASSERT_EQ(both.status, 0) << both.err;
  ASSERT_EQ(second.status, 0) << second.err;
  EXPECT_EQ(nlohmann::json::parse(both.out)["answers"][1]["text"], nlohmann::json::parse(second.out)["answers"][0]["text"]);
  for (const char* bad : {" --press knorm --ratio 1.5", " --press knorm --ratio 0.5 --press-opt budget=4", " --decode-interval 4",
                          " --press knorm --decode-target 4", " --press 'adakv(' --ratio 0.5", " --press knorm --press-opt budget=-3"}) {
    const CliResult r = run_cli(base + bad);
    EXPECT_NE(r.status, 0) << bad;
    EXPECT_EQ(r.err_lines(), 1) << bad << ": " << r.err;
  }
}

TEST(PressPipeline, LagKvCompressesBetweenChunksAndWhileDecoding) {
  auto model = Model::load(test_paths::stories260k());
  const auto ids = prompt_ids(*model, 200);
  Session s(*model, {.chunk = 16, .threads = 1});  // LagKV's schedule: lag-sized chunks
  auto press = make_press("lagkv", {"mode=lagkv", "lag_size=16", "n_sink=4"});
  const CompressionPolicy policy{.decode_triggers = true};
  const int64_t lag = 16, sink = 4;
  // The LagKV bound: sinks + half of the scored partitions + a tail of [lag, 2 lag) slots.
  auto bound = [&](int64_t seen) { return sink + (seen - sink) / 2 + 2 * lag; };
  PressRunner runner(s, press.get(), Budget{0.5}, press.get(), policy);
  int64_t peak = 0;
  prefill_by_chunks(runner, ids, 16, [&] {
    peak = std::max(peak, max_len(s.cache()));
    EXPECT_LE(max_len(s.cache()), bound(s.next_position())) << "after " << s.next_position();
  });
  EXPECT_LT(peak, 200 * 3 / 4);
  EXPECT_GT(runner.compressions(), 0);
  decode_greedily(s, runner, 64, [&](int step) { EXPECT_LE(max_len(s.cache()), bound(s.next_position())) << "step " << step; });
  // Sinks stay; the most recent token is always held.
  const auto pos = s.cache().positions(1, 2);
  EXPECT_EQ(pos[0], 0);
  EXPECT_EQ(pos[3], 3);
  EXPECT_EQ(pos.back(), s.next_position() - 1);
  EXPECT_LT(static_cast<int64_t>(pos.size()), s.next_position() * 3 / 4);
}

TEST(PressPipeline, CliQueryAwareCompressesEachQuestionWithTheContext) {
  const std::string base = "generate -m " + test_paths::stories260k() +
                           " -p 'Once upon a time there was a little girl named Lily. She had a dog named Max. One day the dog took her ball.'"
                           " -n 12 --json -t 1";
  const std::string finch = " --press finch --ratio 0.5 --press-opt finch.rerotate_keys=false";
  const CliResult both = run_cli(base + finch + " -q 'What did the dog take?' -q 'Who is Max?'");
  const CliResult second = run_cli(base + finch + " -q 'Who is Max?'");
  ASSERT_EQ(both.status, 0) << both.err;
  ASSERT_EQ(second.status, 0) << second.err;
  const auto jb = nlohmann::json::parse(both.out), js = nlohmann::json::parse(second.out);
  EXPECT_EQ(jb["answers"][1]["text"], js["answers"][0]["text"]);  // each question from its own copy
  // Context and question (< 16 tokens) were compressed together to half, then the answer's
  // tokens were appended.
  const int64_t context = js["prompt_tokens"].size(), answer = js["answers"][0]["output_tokens"].size();
  for (const auto& layer : js["kv_lengths"])
    for (const auto& len : layer) EXPECT_LE(len.get<int64_t>(), (context + 16) / 2 + answer);
  const CliResult no_question = run_cli(base + finch);
  EXPECT_NE(no_question.status, 0);
  EXPECT_EQ(no_question.err_lines(), 1) << no_question.err;
}
