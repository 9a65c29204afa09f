// examples/long_context_qa (the README's demo): it runs, its bytes are the real compressed sizes,
// bad settings are one clear error, and on the default model the compressed caches still answer
// what the uncompressed cache answers.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "cli_runner.h"
#include "test_paths.h"

namespace {

struct SettingOutput {
  std::string label;
  double times_smaller = 0.0;
  std::vector<std::string> answers;
};

std::vector<SettingOutput> parse(const std::string& out) {
  std::vector<SettingOutput> settings;
  std::istringstream in(out);
  const std::regex smaller(R"(\(([0-9.]+)x smaller\))");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("== ", 0) == 0) settings.push_back({line.substr(3)});
    if (settings.empty()) continue;
    std::smatch m;
    if (line.rfind("  KV cache:", 0) == 0 && std::regex_search(line, m, smaller)) settings.back().times_smaller = std::stod(m[1]);
    if (line.rfind("  A: ", 0) == 0) settings.back().answers.push_back(line.substr(5));
  }
  return settings;
}

// A story of ~400 tokens for stories260K.
std::string story() {
  std::string text;
  for (int i = 0; i < 8; ++i)
    text += "Once upon a time there was a little girl named Lily. She loved to play outside with her dog. "
            "One day they went to the park and saw a big red ball under a tree. ";
  return text;
}

std::string write_file(const std::string& name, const std::string& text) {
  const std::string path = test_paths::scratch_dir() + "/" + name + test_paths::process_tag();
  std::ofstream(path) << text;
  return path;
}

TEST(ExampleLongContextQa, StoriesRunsEverySettingWithItsRealSize) {
  const std::string doc = write_file("qa_doc.txt", story());
  const std::string questions = write_file("qa_questions.txt", "Who went to the park?\nWhat did she see?\n");
  const CliResult r = run_program(test_paths::example_qa_path(), test_paths::stories260k() + " " + doc + " " + questions +
                                                                     " snapkv@0.5 knorm@0.75+q 'adakv(snapkv)@0.5'");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto settings = parse(r.out);
  ASSERT_EQ(settings.size(), 4u) << r.out;
  EXPECT_EQ(settings[0].label, "no compression");
  for (const auto& s : settings) EXPECT_EQ(s.answers.size(), 2u) << s.label;
  // Held bytes follow the ratio (slots x (K + V + position), the same for every run).
  EXPECT_NEAR(settings[0].times_smaller, 1.0, 0.02);
  EXPECT_NEAR(settings[1].times_smaller, 2.0, 0.05) << settings[1].label;
  EXPECT_GT(settings[2].times_smaller, 3.0) << settings[2].label;  // context + question, then 75% removed
  EXPECT_NEAR(settings[3].times_smaller, 2.0, 0.05) << settings[3].label;
}

TEST(ExampleLongContextQa, BadSettingIsOneClearError) {
  const std::string doc = write_file("qa_doc.txt", story());
  const std::string questions = write_file("qa_questions.txt", "Who?\n");
  for (const std::string bad : {"snapkv@1.5", "nosuchpress@0.5", "snapkv", "snapkv@x"}) {
    const CliResult r = run_program(test_paths::example_qa_path(), test_paths::stories260k() + " " + doc + " " + questions + " " + bad);
    EXPECT_EQ(r.status, 1) << bad;
    EXPECT_EQ(r.err_lines(), 1) << bad << ": " << r.err;
    EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
  }
  const CliResult missing = run_program(test_paths::example_qa_path(), test_paths::stories260k() + " /nonexistent.txt " + questions);
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.err.find("/nonexistent.txt"), std::string::npos) << missing.err;
}

// The demo's claim: query-aware ChunkKV(SnapKV) at 2x and 4x answers every question the
// uncompressed cache answers (its default settings). Each question's key fact is a phrase of the chapter (data/demo/questions.txt).
TEST(ExampleLongContextQaDefaultModel, CompressedAnswersKeepTheFacts) {
  const std::string model = test_paths::default_model();
  if (model.empty()) GTEST_SKIP() << "default model not present (scripts/get_model.sh)";
  const std::string demo = test_paths::source_dir() + "/data/demo/";
  const CliResult r = run_program(test_paths::example_qa_path(), model + " " + demo + "alice_chapter1.txt " + demo +
                                                                     "questions.txt 'chunkkv(snapkv)@0.5+q' 'chunkkv(snapkv)@0.75+q'");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto settings = parse(r.out);
  ASSERT_EQ(settings.size(), 3u) << r.out;
  const std::vector<std::string> facts = {"Dinah", "MARMALADE", "DRINK ME", "cake", "Rabbit"};
  int answered = 0;
  for (size_t q = 0; q < facts.size(); ++q) {
    ASSERT_EQ(settings[0].answers.size(), facts.size()) << r.out;
    if (settings[0].answers[q].find(facts[q]) == std::string::npos) continue;  // the model does not know it uncompressed
    ++answered;
    for (size_t s = 1; s < settings.size(); ++s)
      EXPECT_NE(settings[s].answers[q].find(facts[q]), std::string::npos)
          << settings[s].label << " lost '" << facts[q] << "': " << settings[s].answers[q];
  }
  EXPECT_GE(answered, 3) << r.out;
  EXPECT_GT(settings[1].times_smaller, 1.9);
  EXPECT_GT(settings[2].times_smaller, 3.8);
}

}  // namespace
