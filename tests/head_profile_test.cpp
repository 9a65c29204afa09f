// kvsqueeze profile-heads (docs/METHODS.md §5): the head metrics on hand-made attention rows, the
// needle's span in the final tokens, real runs on stories260K (and the default model), the
// answer gate, determinism and the CLI's errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "cli_runner.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/metrics.h"
#include "kvsqueeze/eval/tasks.h"
#include "kvsqueeze/head_profile.h"
#include "kvsqueeze/model.h"
#include "press/head_budget.h"

namespace {

using kvsqueeze::profile::RowMetrics;
namespace profile = kvsqueeze::profile;

std::string scratch(const std::string& name) {
  return test_paths::scratch_dir() + "/headprof" + test_paths::process_tag() + "-" + name;
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// ---------------------------------------------------------------- metric formulas

TEST(HeadProfileMetrics, HandMadeRow) {
  // Positions 0..7, needle [2, 5), K = 3.
  const std::vector<float> row = {0.30f, 0.05f, 0.20f, 0.10f, 0.02f, 0.15f, 0.08f, 0.10f};
  const RowMetrics m = profile::row_metrics(row, 2, 5, 3);
  // Top-3: 0.30 (pos 0), 0.20 (pos 2), 0.15 (pos 5).
  // WTP = a2 = 0.20; WFP = a0 + a5 = 0.45; needle mass = a2 + a3 + a4 = 0.32; WFN = 0.32 - 0.20 = 0.12.
  EXPECT_NEAR(m.wtp, 0.20, 1e-7);
  EXPECT_NEAR(m.wfp, 0.45, 1e-7);
  EXPECT_NEAR(m.wfn, 0.12, 1e-7);
  // P = 0.20 / 0.65 = 4/13; R = 0.20 / 0.32 = 5/8; InfScore = 2PR/(P+R) = (5/13)/(97/104) = 40/97.
  EXPECT_NEAR(m.precision, 4.0 / 13.0, 1e-6);
  EXPECT_NEAR(m.recall, 5.0 / 8.0, 1e-6);
  EXPECT_NEAR(m.infscore, 40.0 / 97.0, 1e-6);
  // Diligent: {2}; distracted: {0, 5}; subconscious: {3, 4}; diffuse peripheral: {1, 6, 7}.
  EXPECT_EQ(m.diligent, 1);
  EXPECT_EQ(m.distracted, 2);
  EXPECT_EQ(m.subconscious, 2);
  EXPECT_EQ(m.diffuse_peripheral, 3);
  EXPECT_EQ(m.diligent + m.distracted + m.subconscious + m.diffuse_peripheral, 8);
}

TEST(HeadProfileMetrics, WholeNeedleInTopKGivesNoFalseNegatives) {
  // Needle [1, 3) = {0.6, 0.3} both in the top-2: WTP = 0.9 = needle mass, WFN = max(0, 0.9 - 0.9) = 0,
  // WFP = 0: P = R = InfScore = 1. Counts: diligent 2, the rest 0 except diffuse {0}.
  const RowMetrics m = profile::row_metrics({0.1f, 0.6f, 0.3f}, 1, 3, 2);
  EXPECT_EQ(m.wfn, 0.0);
  EXPECT_DOUBLE_EQ(m.precision, 1.0);
  EXPECT_DOUBLE_EQ(m.recall, 1.0);
  EXPECT_DOUBLE_EQ(m.infscore, 1.0);
  EXPECT_EQ(m.diligent, 2);
  EXPECT_EQ(m.subconscious, 0);
  EXPECT_EQ(m.distracted, 0);
  EXPECT_EQ(m.diffuse_peripheral, 1);
}

TEST(HeadProfileMetrics, WfnNeverNegativeAndCategoriesSumToTheRow) {
  // Random rows (softmax-like, many ties from coarse quantisation): WFN = max(0, needle mass - WTP)
  // is clamped at 0, P, R, InfScore stay in [0, 1], the counts partition the row.
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> level(0, 5);
  for (int trial = 0; trial < 500; ++trial) {
    const int64_t len = 1 + trial % 40;
    std::vector<float> row(static_cast<size_t>(len));
    float sum = 0;
    for (auto& x : row) sum += (x = static_cast<float>(level(rng)) / 7.0f);
    if (sum > 0)
      for (auto& x : row) x /= sum;
    const int64_t b = trial % len, e = std::min<int64_t>(len, b + 1 + trial % 5), k = 1 + trial % 12;
    const RowMetrics m = profile::row_metrics(row, b, e, k);
    SCOPED_TRACE(trial);
    EXPECT_GE(m.wfn, 0.0);
    for (double x : {m.precision, m.recall, m.infscore}) {
      EXPECT_GE(x, 0.0);
      EXPECT_LE(x, 1.0 + 1e-12);
    }
    EXPECT_EQ(m.diligent + m.distracted, std::min(k, len));
    EXPECT_EQ(m.diligent + m.subconscious, e - b);
    EXPECT_EQ(m.diligent + m.distracted + m.subconscious + m.diffuse_peripheral, len);
  }
}

TEST(HeadProfileMetrics, BothZeroGivesZeroInfScore) {
  // A sliding-window head that cannot see the needle [2, 4): WTP = 0, WFP = 1, WFN = 0:
  // P = 0/1 = 0, R = 0/0 -> 0, InfScore = 0 (not NaN).
  const RowMetrics hidden = profile::row_metrics({0.5f, 0.5f, 0.0f, 0.0f}, 2, 4, 2);
  EXPECT_EQ(hidden.precision, 0.0);
  EXPECT_EQ(hidden.recall, 0.0);
  EXPECT_EQ(hidden.infscore, 0.0);
  // An all-zero row: every ratio is 0/0 -> 0.
  const RowMetrics zero = profile::row_metrics({0.0f, 0.0f, 0.0f}, 0, 1, 2);
  EXPECT_EQ(zero.precision, 0.0);
  EXPECT_EQ(zero.recall, 0.0);
  EXPECT_EQ(zero.infscore, 0.0);
  // Precision 1 with recall > 0: the top-1 0.4 is in the needle {0.4, 0.1}: R = 0.4/0.5 = 0.8,
  // InfScore = 2*1*0.8/1.8 = 8/9.
  EXPECT_NEAR(profile::row_metrics({0.4f, 0.1f, 0.3f, 0.2f}, 0, 2, 1).infscore, 8.0 / 9.0, 1e-6);
}

TEST(HeadProfileMetrics, TopKTiesGoToTheLaterPosition) {
  EXPECT_EQ(profile::top_positions({0.25f, 0.25f, 0.25f, 0.25f}, 2), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(profile::top_positions({0.1f, 0.5f, 0.2f, 0.5f}, 3), (std::vector<int64_t>{3, 1, 2}));
  EXPECT_EQ(profile::top_positions({0.1f, 0.5f}, 5), (std::vector<int64_t>{1, 0}));  // K beyond the row
}

TEST(HeadProfileMetrics, RetrievalScoreCountsCopies) {
  // Needle [1, 5) of prompt tokens {10, 11, 12, 13, 14, 15}: |N| = 4.
  const std::vector<int32_t> prompt = {10, 11, 12, 13, 14, 15};
  const std::vector<float> row = {0.1f, 0.1f, 0.5f, 0.1f, 0.1f, 0.1f};  // top-1: position 2 (token 12)
  EXPECT_DOUBLE_EQ(profile::retrieval_step(row, 1, 5, prompt, 12), 0.25);  // copies token 12: 1/|N|
  EXPECT_EQ(profile::retrieval_step(row, 1, 5, prompt, 13), 0.0);          // attends 12, emits 13
  EXPECT_EQ(profile::retrieval_step(row, 3, 5, prompt, 12), 0.0);          // top-1 outside the needle
  // Ties: {0.4 at 1, 0.4 at 4} -> position 4 (token 14).
  EXPECT_DOUBLE_EQ(profile::retrieval_step({0.0f, 0.4f, 0.1f, 0.0f, 0.4f, 0.1f}, 1, 5, prompt, 14), 0.25);
}

TEST(HeadProfileMetrics, RetrievalReasoningScore) {
  // Needle [1, 3) (|N| = 2), answer of 4 tokens: over the top-2 {pos 2: 0.5, pos 0: 0.3}, only
  // pos 2 is in the needle: 10 * 0.5 / (2 * 4) = 0.625.
  EXPECT_NEAR(profile::retrieval_reasoning_step({0.3f, 0.1f, 0.5f, 0.1f}, 1, 3, 4), 0.625, 1e-7);
  // Both needle tokens on top: 10 * (0.6 + 0.3) / (2 * 1) = 4.5.
  EXPECT_NEAR(profile::retrieval_reasoning_step({0.1f, 0.6f, 0.3f}, 1, 3, 1), 4.5, 1e-6);
}

TEST(HeadProfileGate, AnswerChecks) {
  // LongBench token F1: "Relax and do nothing." -> {relax, and, do, nothing}; reference
  // "to relax and do nothing" -> 5 tokens, 4 shared: P = 1, R = 4/5, F1 = 8/9.
  EXPECT_NEAR(profile::gate_score("f1", "Relax and do nothing.", "to relax and do nothing"), 8.0 / 9.0, 1e-9);
  // A full sentence: 13 tokens after normalisation, 5 shared: P = 5/13, R = 1, F1 = 10/18 = 0.556 >= 0.5.
  EXPECT_NEAR(profile::gate_score("f1", "The good ways to spend time on campus are to relax and do nothing.",
                                  "to relax and do nothing"),
              2.0 * (5.0 / 13.0) / (5.0 / 13.0 + 1.0), 1e-9);
  EXPECT_EQ(profile::gate_score("f1", "The library.", "to relax and do nothing"), 0.0);
  EXPECT_NEAR(profile::gate_score("rouge", "in 2020", "in 2020"), 1.0, 1e-6);  // the rouge package's 1e-8 smoothing
  EXPECT_EQ(profile::gate_score("none", "", "anything"), 1.0);
  EXPECT_THROW(profile::gate_score("cosine", "a", "b"), kvsqueeze::Error);
  // The default needles' references pass the default gate with themselves.
  for (const auto& n : profile::default_needles()) EXPECT_GE(profile::gate_score("f1", n.answer, n.answer), 0.5);
}

TEST(HeadProfileNeedles, ReadsJsonlAndRejectsMalformedLines) {
  const std::string path = scratch("needles.jsonl");
  write_text(path, "{\"needle\": \"N1.\", \"question\": \"Q1?\", \"answer\": \"A1\"}\n\n{\"needle\": \"N2.\", \"question\": \"Q2?\", \"answer\": \"A2\"}\n");
  const auto needles = profile::read_needles(path);
  ASSERT_EQ(needles.size(), 2u);
  EXPECT_EQ(needles[1].needle, "N2.");
  EXPECT_EQ(needles[1].answer, "A2");
  for (const std::string bad : {"{\"needle\": \"N\", \"question\": \"Q\"}\n", "not json\n", "[1, 2]\n",
                                "{\"needle\": \"\", \"question\": \"Q\", \"answer\": \"A\"}\n", "\n\n",
                                "{\"needle\": 3, \"question\": \"Q\", \"answer\": \"A\"}\n"}) {
    write_text(path, bad);
    EXPECT_THROW(profile::read_needles(path), kvsqueeze::Error) << bad;
  }
  EXPECT_THROW(profile::read_needles(scratch("missing.jsonl")), kvsqueeze::Error);
  std::filesystem::remove(path);
}

// ---------------------------------------------------------------- needle span

class HeadProfileStories : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = kvsqueeze::Model::load(test_paths::stories260k()).release(); }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  static kvsqueeze::Model* model_;
};
kvsqueeze::Model* HeadProfileStories::model_ = nullptr;

// The span decodes to text holding the needle, and neither end can be dropped.
void expect_tight_span(const kvsqueeze::Tokenizer& tok, const std::vector<int32_t>& ids, profile::TokenSpan span,
                       const std::string& needle) {
  ASSERT_LT(span.begin, span.end);
  ASSERT_LE(span.end, static_cast<int64_t>(ids.size()));
  auto text = [&](int64_t b, int64_t e) { return tok.decode({ids.begin() + b, ids.begin() + e}); };
  EXPECT_NE(text(span.begin, span.end).find(needle), std::string::npos) << text(span.begin, span.end);
  EXPECT_EQ(text(span.begin + 1, span.end).find(needle), std::string::npos);
  EXPECT_EQ(text(span.begin, span.end - 1).find(needle), std::string::npos);
}

TEST_F(HeadProfileStories, NeedleSpanInFinalTokens) {
  const auto& tok = model_->tokenizer();
  const auto hay = profile::haystack_tokens(tok, kvsqueeze::eval::default_haystack(), 400);
  for (const auto& needle : profile::default_needles()) {
    for (double depth : {0.0, 10.0, 50.0, 98.0}) {
      SCOPED_TRACE(needle.needle + " @" + std::to_string(depth));
      const auto p = profile::build_prompt(*model_, hay, 384, depth, needle, true);
      EXPECT_LE(static_cast<int64_t>(p.ids.size()), 384);
      EXPECT_EQ(p.ids.front(), tok.bos_id());
      expect_tight_span(tok, p.ids, p.needle, needle.needle);
      // Deeper needles sit later; the needle is in the context at a sentence start.
      const size_t at = p.context.find(needle.needle);
      ASSERT_NE(at, std::string::npos);
      if (at > 0) {
        EXPECT_EQ(p.context[at - 1], ' ');
      }
      if (depth == 0.0) {
        EXPECT_EQ(at, 0u);
      }
      // The prompt ends with the question and "Answer:".
      const std::string tail = tok.decode(p.ids);
      EXPECT_NE(tail.find(needle.question + "\nAnswer:"), std::string::npos);
    }
  }
  // Direct location: a needle in the middle of encoded text; absent text throws.
  const auto ids = tok.encode("Once upon a time. The cat sat on the mat. Then it slept.", true);
  expect_tight_span(tok, ids, profile::locate_needle(tok, ids, "The cat sat on the mat."), "The cat sat on the mat.");
  EXPECT_THROW(profile::locate_needle(tok, ids, "The dog barked."), kvsqueeze::Error);
  // A needle that leaves no room for the haystack.
  EXPECT_THROW(profile::build_prompt(*model_, hay, 205, 50, profile::default_needles()[0], true), kvsqueeze::Error);
}

// ---------------------------------------------------------------- real runs

profile::ProfileOptions stories_options() {
  profile::ProfileOptions o;
  o.lengths = {256, 384};
  o.depths = {10, 50, 90};
  o.session.threads = 1;
  o.max_new_tokens = 24;
  o.progress = false;
  return o;
}

TEST_F(HeadProfileStories, RunProducesEveryHeadWithValidRanges) {
  const auto& cfg = model_->config();
  profile::ProfileOptions o = stories_options();
  o.gate = "none";
  o.decode_steps = 2;
  const nlohmann::json j = profile::profile_heads(*model_, o);
  const int64_t runs = 2 * 3 * 3;
  const auto& meta = j.at("_meta");
  EXPECT_EQ(meta.at("runs"), runs);
  EXPECT_EQ(meta.at("accepted"), runs);
  EXPECT_EQ(meta.at("rejected"), 0);
  EXPECT_EQ(meta.at("metric"), "infscore");
  EXPECT_EQ(meta.at("top_k"), 10);
  EXPECT_EQ(meta.at("model"), "stories260K.gguf");
  EXPECT_EQ(meta.at("model_sha").get<std::string>().size(), 16u);
  EXPECT_EQ(meta.at("needles").size(), 3u);
  int64_t plain_keys = 0;
  for (const auto& [k, v] : j.items())
    if (k[0] != '_') ++plain_keys;
  EXPECT_EQ(plain_keys, cfg.n_layer * cfg.n_head);
  ASSERT_EQ(j.at("_runs").size(), static_cast<size_t>(runs));
  const auto& all = j.at("_all");
  double max_inf = 0;
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    for (int64_t h = 0; h < cfg.n_head; ++h) {
      const std::string key = std::to_string(l) + "-" + std::to_string(h);
      ASSERT_TRUE(j.contains(key)) << key;
      ASSERT_EQ(j.at(key).size(), static_cast<size_t>(runs));
      EXPECT_EQ(j.at(key), all.at("infscore").at(key));  // the chosen metric
      for (const char* name : {"infscore", "precision", "recall", "retrieval"})
        for (const auto& x : all.at(name).at(key)) {
          EXPECT_GE(x.get<double>(), 0.0) << name << " " << key;
          EXPECT_LE(x.get<double>(), 1.0 + 1e-9) << name << " " << key;
        }
      for (const auto& x : all.at("infscore").at(key)) max_inf = std::max(max_inf, x.get<double>());
      for (size_t r = 0; r < static_cast<size_t>(runs); ++r) {
        // Category counts are means over the rows analysed (the prompt's last token, then up to 2
        // generated ones, each seeing one more position): they sum to the mean row length.
        const auto& run = j.at("_runs")[r];
        const double prompt = run.at("prompt_tokens").get<double>();
        double sum = 0;
        for (const char* c : {"diligent", "subconscious", "distracted", "diffuse_peripheral"})
          sum += all.at(c).at(key)[r].get<double>();
        EXPECT_GE(sum, prompt - 1e-9);
        EXPECT_LE(sum, prompt + 1.0 + 1e-9);
        const auto span = run.at("needle_span");
        EXPECT_NEAR(all.at("diligent").at(key)[r].get<double>() + all.at("subconscious").at(key)[r].get<double>(),
                    span[1].get<double>() - span[0].get<double>(), 1e-9);
      }
    }
  }
  EXPECT_GT(max_inf, 0.0);  // some head attends to the needle somewhere
  // KV heads: the mean of their G query heads.
  const int64_t group = cfg.n_head / cfg.n_head_kv;
  const auto& kv = j.at("_kv_heads").at("infscore");
  EXPECT_EQ(static_cast<int64_t>(kv.size()), cfg.n_layer * cfg.n_head_kv);
  for (int64_t l = 0; l < cfg.n_layer; ++l)
    for (int64_t k = 0; k < cfg.n_head_kv; ++k)
      for (size_t r = 0; r < static_cast<size_t>(runs); ++r) {
        double mean = 0;
        for (int64_t g = 0; g < group; ++g) mean += j.at(std::to_string(l) + "-" + std::to_string(k * group + g))[r].get<double>() / group;
        EXPECT_NEAR(kv.at(std::to_string(l) + "-" + std::to_string(k))[r].get<double>(), mean, 1e-12);
      }
}

TEST_F(HeadProfileStories, GateCountsMatchTheAnswers) {
  // First every run with no gate, to learn the answers; then the token-F1 gate with a threshold
  // between the two best F1 values seen, so some runs pass and some do not. The second file must
  // record each answer's F1, accept exactly the runs at or above the threshold, and hold per head
  // exactly the first file's values of those runs.
  profile::ProfileOptions o = stories_options();
  o.depths = {50};
  o.needles = {{"Tom had a small dog named Spot who liked to run.", "What was the name of the dog?", "Spot the dog"},
               profile::default_needles()[0]};
  o.gate = "none";
  const nlohmann::json all_runs = profile::profile_heads(*model_, o);
  std::vector<double> f1;
  for (const auto& run : all_runs.at("_runs"))
    f1.push_back(kvsqueeze::eval::qa_f1(run.at("answer").get<std::string>(), o.needles[run.at("needle").get<size_t>()].answer));
  ASSERT_EQ(f1.size(), 4u);
  std::vector<double> distinct = f1;
  std::sort(distinct.rbegin(), distinct.rend());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  if (distinct.size() < 2) GTEST_SKIP() << "every answer has the same F1 " << distinct[0];
  o.gate = "f1";
  o.gate_threshold = (distinct[0] + distinct[1]) / 2;
  const nlohmann::json gated = profile::profile_heads(*model_, o);
  int64_t expected = 0;
  std::vector<size_t> kept;
  for (size_t r = 0; r < f1.size(); ++r) {
    const auto& run = gated.at("_runs")[r];
    EXPECT_EQ(run.at("answer"), all_runs.at("_runs")[r].at("answer"));
    EXPECT_DOUBLE_EQ(run.at("gate_score").get<double>(), f1[r]);
    EXPECT_EQ(run.at("accepted").get<bool>(), f1[r] >= o.gate_threshold);
    if (f1[r] >= o.gate_threshold) {
      ++expected;
      kept.push_back(r);
    }
  }
  EXPECT_GE(expected, 1);
  EXPECT_LT(expected, 4);
  EXPECT_EQ(gated.at("_meta").at("accepted"), expected);
  EXPECT_EQ(gated.at("_meta").at("rejected"), 4 - expected);
  EXPECT_EQ(gated.at("_meta").at("gate").at("name"), "f1");
  for (const auto& [key, list] : gated.items()) {
    if (key[0] == '_') continue;
    ASSERT_EQ(list.size(), kept.size()) << key;
    for (size_t i = 0; i < kept.size(); ++i) EXPECT_EQ(list[i], all_runs.at(key)[kept[i]]) << key;
  }
}

// An interrupted profile resumes from its checkpoint: finished runs are read back, not run again,
// and the profile is the same; a torn last line (an interrupted append) is run again; a run of
// other settings is not taken.
TEST_F(HeadProfileStories, ResumesFromItsCheckpoint) {
  profile::ProfileOptions o = stories_options();
  o.gate = "none";
  o.lengths = {384};
  const nlohmann::json plain = profile::profile_heads(*model_, o);
  o.checkpoint = test_paths::scratch_dir() + "/" + test_paths::process_tag() + "profile.partial.jsonl";
  std::filesystem::remove(o.checkpoint);
  nlohmann::json first = profile::profile_heads(*model_, o);
  const int64_t runs = first.at("_meta").at("runs").get<int64_t>();
  EXPECT_EQ(first.at("_meta").at("resumed_runs"), 0);
  // Tear one run's line in half (an interrupted append): a run whose key no other run shares (on this
  // small model several depths can give the same prompt, hence the same key).
  std::ifstream in(o.checkpoint);
  std::vector<std::string> lines, keys;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
    keys.push_back(nlohmann::json::parse(line).at("key").get<std::string>());
  }
  ASSERT_EQ(static_cast<int64_t>(lines.size()), runs);
  in.close();
  size_t torn = lines.size();
  for (size_t i = 0; i < keys.size(); ++i)
    if (std::count(keys.begin(), keys.end(), keys[i]) == 1) torn = i;
  ASSERT_LT(torn, lines.size());
  {
    std::ofstream out(o.checkpoint, std::ios::trunc);
    for (size_t i = 0; i < lines.size(); ++i)
      if (i != torn) out << lines[i] << "\n";
    out << lines[torn].substr(0, lines[torn].size() / 2);
  }
  nlohmann::json resumed = profile::profile_heads(*model_, o);
  EXPECT_EQ(resumed.at("_meta").at("resumed_runs"), runs - 1);
  for (auto* j : {&first, &resumed}) j->at("_meta").erase("resumed_runs");
  nlohmann::json expected = plain;
  expected.at("_meta").erase("resumed_runs");
  EXPECT_EQ(first, expected);
  EXPECT_EQ(resumed, expected);
  // Other settings (top_k) make other keys: nothing is taken.
  o.top_k = 5;
  EXPECT_EQ(profile::profile_heads(*model_, o).at("_meta").at("resumed_runs"), 0);
  std::filesystem::remove(o.checkpoint);
}

TEST_F(HeadProfileStories, GateRejectsWrongAnswers) {
  // A reference no answer can match exactly: F1 = 1 is never reached, every run is rejected.
  profile::ProfileOptions o = stories_options();
  o.lengths = {256};
  o.depths = {50};
  o.needles = {{"Lily had a red ball.", "What did Lily have?", "zyxwv qutsr"}};
  o.gate_threshold = 1.0;
  try {
    profile::profile_heads(*model_, o);
    FAIL() << "expected no accepted run";
  } catch (const kvsqueeze::Error& e) {
    EXPECT_NE(std::string(e.what()).find("0 of 1 accepted"), std::string::npos) << e.what();
  }
  // The same with no gate is accepted.
  o.gate = "none";
  EXPECT_EQ(profile::profile_heads(*model_, o).at("_meta").at("accepted"), 1);
}

// ---------------------------------------------------------------- CLI

const std::string kStoriesArgs = "-m " + test_paths::stories260k() + " --lengths 256,384 --depths 10,90 -t 1 --max-new-tokens 16 -q";

TEST(HeadProfileCli, DeterministicFileAndHeatMap) {
  const std::string a = scratch("a/heads.json"), b = scratch("b/heads.json");
  for (const auto& out : {a, b}) {
    const CliResult r = run_cli("profile-heads " + kStoriesArgs + " --gate none --metric retrieval -o " + out);
    ASSERT_EQ(r.status, 0) << r.err;
  }
  const std::string first = slurp(a);
  ASSERT_FALSE(first.empty());
  EXPECT_EQ(first, slurp(b));
  const auto j = nlohmann::json::parse(first);
  EXPECT_EQ(j.at("_meta").at("metric"), "retrieval");
  EXPECT_EQ(j.at("0-0"), j.at("_all").at("retrieval").at("0-0"));
  EXPECT_EQ(j.at("_meta").at("lengths"), (std::vector<int64_t>{256, 384}));
  EXPECT_EQ(j.at("_meta").at("depths"), (std::vector<double>{10, 90}));
  EXPECT_TRUE(std::filesystem::exists(scratch("a/heads.png")));
  EXPECT_TRUE(std::filesystem::exists(scratch("a/heads.svg")));
  // No temporary files left behind.
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(a).parent_path()))
    EXPECT_EQ(entry.path().string().find(".tmp-"), std::string::npos) << entry.path();
  // Fractions with --depth-unit fraction and linspace lengths give the same runs.
  const std::string c = scratch("c/heads.json");
  const CliResult r = run_cli("profile-heads -m " + test_paths::stories260k() +
                              " --lengths 256:384:2 --depths 0.1,0.9 --depth-unit fraction -t 1 --max-new-tokens 16 -q"
                              " --gate none --metric retrieval -o " + c);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(slurp(c), first);
  // The allocators read the file's "layer-head" lists, or with metric=NAME that metric of "_all".
  namespace hb = kvsqueeze::head_budget;
  const auto top = hb::read_head_scores(a), retrieval = hb::read_head_scores(a, "retrieval"),
             infscore = hb::read_head_scores(a, "infscore");
  EXPECT_EQ(top.scores, retrieval.scores);
  const auto runs = j.at("_all").at("infscore").at("1-0").get<std::vector<double>>();
  double mean = 0;
  for (double x : runs) mean += x / static_cast<double>(runs.size());
  EXPECT_NEAR(infscore.scores.at({1, 0}), mean, 1e-12);
  EXPECT_EQ(infscore.scores.size(), top.scores.size());
  EXPECT_THROW(hb::read_head_scores(a, "no_such_metric"), kvsqueeze::Error);
  for (const char* dir : {"a", "b", "c"}) std::filesystem::remove_all(scratch(dir));
}

void expect_clean_error(const CliResult& r, const std::string& needle, const std::string& out) {
  EXPECT_NE(r.status, 0);
  EXPECT_LT(r.status, 128) << "killed by a signal: " << r.err;
  EXPECT_EQ(r.err_lines(), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr: " << r.err;
  EXPECT_FALSE(std::filesystem::exists(out)) << "a partial output was written";
}

TEST(HeadProfileCli, ErrorsAreOneLine) {
  const std::string out = scratch("err/heads.json");
  const std::string bad_needles = scratch("bad.jsonl"), long_needle = scratch("long.jsonl"), bad_model = scratch("bad.gguf");
  write_text(bad_needles, "{\"needle\": \"N\", \"question\": \"Q\"}\n");
  write_text(long_needle, "{\"needle\": \"" + std::string(2000, 'x') + " end.\", \"question\": \"Q?\", \"answer\": \"A\"}\n");
  write_text(bad_model, std::string(4096, 'x'));
  const std::string base = "profile-heads -q -t 1 -o " + out + " ";
  const std::string stories = "-m " + test_paths::stories260k() + " ";
  expect_clean_error(run_cli(base + stories + "--haystack " + scratch("no-such-dir")), "haystack directory", out);
  expect_clean_error(run_cli(base + stories + "--lengths 256 --needles " + long_needle), "does not fit length 256", out);
  expect_clean_error(run_cli(base + "-m " + bad_model), "wrong magic", out);
  expect_clean_error(run_cli(base + "-m " + scratch("absent.gguf")), "cannot open", out);
  expect_clean_error(run_cli(base + stories + "--needles " + bad_needles), "line 1", out);
  expect_clean_error(run_cli(base + stories + "--needles " + scratch("absent.jsonl")), "cannot read needles file", out);
  expect_clean_error(run_cli(base + stories + "--depths 0.5"), "--depth-unit fraction", out);
  expect_clean_error(run_cli(base + stories + "--depths 150"), "outside 1..100", out);
  expect_clean_error(run_cli(base + stories + "--depths 50 --depth-unit fraction"), "outside 0..1", out);
  expect_clean_error(run_cli(base + stories + "--depths abc"), "not a number", out);
  expect_clean_error(run_cli(base + stories + "--lengths 100:200"), "MIN:MAX:N", out);
  expect_clean_error(run_cli(base + stories + "--metric cosine"), "unknown metric 'cosine'", out);
  expect_clean_error(run_cli(base + stories + "--gate cosine"), "unknown gate 'cosine'", out);
  expect_clean_error(run_cli(base + stories + "--top-k 0"), "top-k must be >= 1", out);
  expect_clean_error(run_cli(base + stories + "--lengths 100000"), "trained context", out);
  // No run passes: nothing is written.
  const std::string impossible = scratch("impossible.jsonl");
  write_text(impossible, "{\"needle\": \"Lily had a red ball.\", \"question\": \"What did Lily have?\", \"answer\": \"zyxwv qutsr\"}\n");
  expect_clean_error(run_cli(base + stories + "--lengths 256 --depths 50 --gate-threshold 1 --max-new-tokens 8 --needles " + impossible),
                     "no run passed the answer gate", out);
  EXPECT_FALSE(std::filesystem::exists(scratch("err/heads.png")));
  // A directory as the output.
  std::filesystem::create_directories(scratch("dir.json"));
  expect_clean_error(run_cli("profile-heads -q " + stories + "-o " + scratch("dir.json")), "is a directory", scratch("dir.json/x"));
  for (const auto& p : {bad_needles, long_needle, bad_model, impossible, scratch("dir.json"), scratch("err")})
    std::filesystem::remove_all(p);
}

TEST(HeadProfileCli, HelpDocumentsTheAnswerCheck) {
  const CliResult r = run_cli("profile-heads --help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("LongBench token F1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--gate-threshold"), std::string::npos);
}

// ---------------------------------------------------------------- default model

TEST(HeadProfileDefaultModel, GemmaProducesScores) {
  const std::string path = test_paths::gemma_model();
  if (path.empty()) GTEST_SKIP() << "default model not present (scripts/get_default_model.sh)";
  const auto model = kvsqueeze::Model::load(path);
  const auto& cfg = model->config();
  // The needle span in the chat-templated prompt.
  const auto hay = profile::haystack_tokens(model->tokenizer(), kvsqueeze::eval::default_haystack(), 1100);
  const auto needle = profile::default_needles()[0];
  const auto p = profile::build_prompt(*model, hay, 1024, 40, needle, true);
  expect_tight_span(model->tokenizer(), p.ids, p.needle, needle.needle);

  const std::string out = scratch("gemma/heads.json");
  const CliResult r = run_cli("profile-heads -q -m " + path + " --lengths 1024 --depths 25,50,75 --max-new-tokens 32 -o " + out);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(slurp(out));
  EXPECT_TRUE(std::filesystem::exists(scratch("gemma/heads.png")));
  const int64_t accepted = j.at("_meta").at("accepted").get<int64_t>();
  EXPECT_GE(accepted, 1);
  int64_t nonzero = 0, keys = 0;
  for (const auto& [k, v] : j.items()) {
    if (k[0] == '_') continue;
    ++keys;
    double mean = 0;
    for (const auto& x : v) mean += x.get<double>();
    nonzero += mean > 0;
  }
  EXPECT_EQ(keys, cfg.n_layer * cfg.n_head);
  EXPECT_GT(nonzero, 0);
  std::filesystem::remove_all(scratch("gemma"));

  // A needle early in the context lies outside the sliding window of the last prompt token:
  // sliding-window heads give it no attention at all (recall 0, none of it in their top-K),
  // which is the truth for those heads; the global layers see it.
  profile::ProfileOptions o;
  o.lengths = {1024};
  o.depths = {2};
  o.needles = {needle};
  o.gate = "none";
  o.max_new_tokens = 4;
  o.progress = false;
  const nlohmann::json early = profile::profile_heads(*model, o);
  const auto& run = early.at("_runs")[0];
  ASSERT_LE(run.at("needle_span")[1].get<int64_t>(), run.at("prompt_tokens").get<int64_t>() - cfg.sliding_window);
  int64_t global_seen = 0;
  for (int64_t l = 0; l < cfg.n_layer; ++l)
    for (int64_t h = 0; h < cfg.n_head; ++h) {
      const std::string key = std::to_string(l) + "-" + std::to_string(h);
      const double recall = early.at("_all").at("recall").at(key)[0].get<double>();
      if (cfg.layer_sliding[static_cast<size_t>(l)]) {
        EXPECT_EQ(recall, 0.0) << key;
        EXPECT_EQ(early.at("_all").at("infscore").at(key)[0].get<double>(), 0.0) << key;
        EXPECT_EQ(early.at("_all").at("diligent").at(key)[0].get<double>(), 0.0) << key;
      } else {
        global_seen += recall > 0;
      }
    }
  EXPECT_GT(global_seen, 0);
}

}  // namespace
