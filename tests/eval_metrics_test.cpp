// Answer metrics (src/eval/*_metrics.cpp). Two kinds of checks:
//  - hand-computed examples, each with how its number follows from the official definition;
//  - tests/fixtures/eval/longbench_metrics.json: hundreds of (prediction, reference) pairs scored
//    by the official Python code itself (LongBench metrics.py / eval.py imported, RULER
//    constants.py, the `rouge` and `fuzzywuzzy` packages), made by
//    tests/reference/eval/make_longbench_metric_fixture.py.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "eval/longbench_config.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/metrics.h"
#include "test_paths.h"

using namespace kvsqueeze;
using namespace kvsqueeze::eval;
using nlohmann::json;

namespace {

const json& fixture() {
  static const json j = [] {
    std::ifstream in(test_paths::fixtures() + "/eval/longbench_metrics.json");
    if (!in) throw std::runtime_error("missing fixture eval/longbench_metrics.json");
    return json::parse(in);
  }();
  return j;
}

std::vector<std::string> strings(const json& v) {
  std::vector<std::string> out;
  if (v.is_array())
    for (const auto& s : v) out.push_back(s.get<std::string>());
  return out;
}

}  // namespace

// ------------------------------------------------------------------ hand-computed examples

TEST(EvalMetrics, NormalizeAnswerDropsCasePunctuationArticlesAndSpaces) {
  // lower -> "the cat's  hat, an a-team!"; punctuation out -> "the cats  hat an ateam";
  // whole-word a/an/the -> spaces; whitespace collapsed.
  EXPECT_EQ(normalize_answer("The Cat's  hat, an A-team!"), "cats hat ateam");
  // Articles only as whole words (Unicode \b): "theater", "anna", "éa" and "the_end" keep theirs.
  EXPECT_EQ(normalize_answer("The theater of Anna"), "theater of anna");
  EXPECT_EQ(normalize_answer("éa a"), "éa");
  EXPECT_EQ(normalize_answer("the_end"), "theend");  // '_' is punctuation, removed before the articles
  EXPECT_EQ(normalize_answer("ÉCOLE\u00a0Normale"), "école normale");  // Unicode lower-case and NBSP
  EXPECT_EQ(normalize_answer(""), "");
}

TEST(EvalMetrics, QaF1IsTrueF1NotRecall) {
  // "paris france" vs "paris": precision 1/2, recall 1 -> F1 = 2*(1/2)*1/(3/2) = 2/3 (recall: 1).
  EXPECT_NEAR(qa_f1("paris france", "Paris"), 2.0 / 3.0, 1e-12);
  // 7 normalised tokens (it was in paris capital of france), 1 shared: P = 1/7, R = 1 -> F1 = 1/4.
  EXPECT_NEAR(qa_f1("It was in Paris, the capital of France.", "Paris"), 0.25, 1e-12);
  // Multiset overlap: "yes yes yes" vs "yes": 1 shared of 3 -> P 1/3, R 1 -> F1 1/2.
  EXPECT_NEAR(qa_f1("yes yes yes", "yes"), 0.5, 1e-12);
  EXPECT_EQ(qa_f1("", "Paris"), 0.0);
  EXPECT_EQ(qa_f1("a an the", "the"), 0.0);  // both normalise to nothing
}

TEST(EvalMetrics, RougeLFollowsTheRougePackage) {
  // One sentence each; word sets {the,cat,sat,on,mat} and {the,cat,is,on,mat} (5 each); the LCS
  // "the cat on the mat" has the word set {the,cat,on,mat} (4): P = R = 4/5 and the package's
  // F = 2*(P*R/(P+R+1e-8)).
  EXPECT_NEAR(rouge_l("the cat sat on the mat", "the cat is on the mat"), 2.0 * (0.64 / (1.6 + 1e-8)), 1e-15);
  // The package raises on a hypothesis with no sentence; LongBench scores that 0.
  EXPECT_EQ(rouge_l("", "reference"), 0.0);
  EXPECT_EQ(rouge_l("...", "reference"), 0.0);
  // " . " keeps one empty sentence (pieces are tested before whitespace is collapsed): one word "".
  EXPECT_NEAR(rouge_l(" . ", " . "), 2.0 * (1.0 / (2.0 + 1e-8)), 1e-15);
}

TEST(EvalMetrics, ClassificationKeepsTheOfficialListRemovalQuirk) {
  // Matches of "ab" among {a, b, ab}: [a, b, ab]. The official loop removes "a" (a proper part of
  // the gold "ab") while iterating, so "b" is never examined and stays: score 1/|{b, ab}| = 1/2.
  EXPECT_NEAR(classification_score("ab", "ab", {"a", "b", "ab"}), 0.5, 1e-12);
  // Case-sensitive: "Number" does not occur in the gold "Other number", the gold is not matched.
  EXPECT_EQ(classification_score("Number", "Other number", {"Other number", "Number"}), 0.0);
  EXPECT_NEAR(classification_score("Location or Animal", "Animal", {"Animal", "Location", "Entity"}), 0.5, 1e-12);
}

TEST(EvalMetrics, RetrievalAndCountScoreTheFractionOfRightNumbers) {
  EXPECT_NEAR(retrieval_score("Paragraph 3 or Paragraph 30", "Paragraph 3"), 0.5, 1e-12);  // numbers 3, 30
  EXPECT_EQ(retrieval_score("no number", "Paragraph 3"), 0.0);
  EXPECT_NEAR(count_score("12, 13 or 12", "12"), 2.0 / 3.0, 1e-12);  // numbers 12, 13, 12
  EXPECT_EQ(count_score("012", "12"), 0.0);                           // compared as strings
  EXPECT_NEAR(retrieval_zh_score("段落1和段落2", "段落2"), 0.5, 1e-12);
  // The official code raises IndexError when the reference has no "Paragraph N".
  EXPECT_THROW(retrieval_score("Paragraph 5", "nothing"), Error);
}

TEST(EvalMetrics, CodeSimUsesTheFirstCodeLineAndPythonRounding) {
  // First line without `, # or //: "abcd"; difflib matches "abc": 2*3/8 -> 75.
  EXPECT_NEAR(code_sim_score("# comment\nabcd", "abce"), 0.75, 1e-12);
  // One match in 16 characters: 100*2/16 = 12.5, which Python's round() takes to 12 (even).
  EXPECT_NEAR(code_sim_score("abcdefgh", "aijklmno"), 0.12, 1e-12);
  // Three matches: 37.5 -> 38.
  EXPECT_NEAR(code_sim_score("abcdefgh", "abcijklm"), 0.38, 1e-12);
  // No code line at all: "" against a non-empty gold is 0; equal strings are 100.
  EXPECT_EQ(code_sim_score("```\n# x", "x = 1"), 0.0);
  EXPECT_EQ(code_sim_score("\n\n", ""), 1.0);
}

TEST(EvalMetrics, RulerStringMatch) {
  // kvpress cleaning deletes control characters: "12\n34" becomes "1234". Found: 1234, 99; not 77.
  EXPECT_NEAR(string_match_all("numbers: 12\n34 and 99", {"1234", "99", "77"}), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(string_match_part("numbers: 12\n34 and 99", {"77", "99"}), 1.0);
  EXPECT_EQ(string_match_part("nothing", {"77", "99"}), 0.0);
  EXPECT_EQ(string_match_all("ABC-Def", {"abc-DEF"}), 1.0);  // case-insensitive both ways
  EXPECT_THROW(string_match_all("x", {}), Error);
}

TEST(EvalMetrics, ScoreAnswerDispatchesAndTakesTheBestReference) {
  EXPECT_NEAR(score_answer("qa_f1", "paris france", {"London", "Paris"}), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(score_answer("qa_f1", "x", {}), 0.0);
  EXPECT_NEAR(score_answer("string_match_all", "a b", {"a", "c"}), 0.5, 1e-12);
  const std::vector<std::string> expected_names = {"string_match_all", "string_match_part", "classification", "code_sim",
                                                   "count", "niah_rouge", "qa_f1", "retrieval", "retrieval_zh", "rouge_l"};
  EXPECT_EQ(metric_names(), expected_names);
  for (const auto& name : metric_names()) {
    // A perfect answer scores 1 under every metric (ROUGE: 1 - 5e-9 from the package's epsilon).
    const std::string answer = name == "retrieval_zh" ? "段落1" : name == "count" ? "1" : "Paragraph 1";
    EXPECT_NEAR(score_answer(name, answer, {answer}, {answer}), 1.0, 1e-8) << name;
  }
  try {
    score_answer("bleu", "x", {"x"});
    FAIL() << "unknown metric accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("qa_f1"), std::string::npos) << e.what();  // lists the valid names
  }
  try {
    score_answer("qa_f1_zh", "x", {"x"});
    FAIL() << "jieba metric accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("jieba"), std::string::npos) << e.what();
  }
}

TEST(EvalMetrics, ScoreSampleCutsAtTheFirstLine) {
  Sample s;
  s.metric = "qa_f1";
  s.references = {"Paris"};
  s.first_line_only = true;
  EXPECT_EQ(longbench_first_line("\n\nParis\nLondon"), "Paris");
  EXPECT_EQ(score_sample(s, "\nParis\nLondon"), 1.0);
  s.first_line_only = false;
  EXPECT_NEAR(score_sample(s, "\nParis\nLondon"), 2.0 / 3.0, 1e-12);
}

// ------------------------------------------------------------------ against the official code

TEST(EvalMetrics, MatchesOfficialLongBenchFunctions) {
  const json& cases = fixture().at("cases");
  ASSERT_GT(cases.size(), 500u);
  int checked = 0;
  for (const auto& c : cases) {
    const std::string metric = c.at("metric"), prediction = c.at("prediction"), reference = c.at("reference");
    const std::vector<std::string> classes = c.contains("all_classes") ? strings(c["all_classes"]) : std::vector<std::string>{};
    SCOPED_TRACE(metric + " | " + prediction + " | " + reference);
    if (c.contains("raises")) {
      EXPECT_THROW(score_answer(metric, prediction, {reference}, classes), Error);
      continue;
    }
    const double expected = c.at("expected");
    EXPECT_NEAR(score_answer(metric, prediction, {reference}, classes), expected, 1e-9);
    ++checked;
  }
  EXPECT_GT(checked, 500);
}

TEST(EvalMetrics, MatchesOfficialLongBenchScorer) {
  // eval.py's scorer(dataset, [prediction], [answers], all_classes): first-line cut, best reference,
  // round(100 * score, 2).
  for (const auto& c : fixture().at("dataset_cases")) {
    const std::string dataset = c.at("dataset");
    SCOPED_TRACE(dataset + " | " + c.at("prediction").get<std::string>());
    const auto& configs = longbench_configs();
    const auto config = std::find_if(configs.begin(), configs.end(), [&](const auto& x) { return x.name == dataset; });
    ASSERT_NE(config, configs.end());
    Sample s;
    s.metric = config->metric;
    s.first_line_only = config->first_line_only;
    s.references = strings(c.at("answers"));
    s.all_classes = strings(c.at("all_classes"));
    const double ours = 100.0 * score_sample(s, c.at("prediction"));
    EXPECT_NEAR(ours, c.at("expected_x100").get<double>(), 0.005 + 1e-9);
  }
}

TEST(EvalMetrics, MatchesOfficialRulerAndNeedleScores) {
  for (const auto& c : fixture().at("ruler_cases")) {
    const std::string prediction = c.at("prediction");
    const auto refs = strings(c.at("references"));
    SCOPED_TRACE(prediction);
    // RULER reports round(100 * score, 2).
    EXPECT_NEAR(100 * string_match_all(prediction, refs), c.at("string_match_all_x100").get<double>(), 0.005 + 1e-9);
    EXPECT_NEAR(100 * string_match_part(prediction, refs), c.at("string_match_part_x100").get<double>(), 0.005 + 1e-9);
  }
  for (const auto& c : fixture().at("niah_cases")) {
    const std::string prediction = c.at("prediction"), needle = c.at("needle");
    SCOPED_TRACE(prediction);
    const double expected = c.contains("raises") ? 0.0 : c.at("expected").get<double>();  // we score 0 where kvpress raises
    EXPECT_NEAR(score_answer("niah_rouge", prediction, {needle}), expected, 1e-9);
  }
}
