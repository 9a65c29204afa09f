// LongBench loader (src/eval/longbench_tasks.cpp) on small JSONL files written here, with the
// stories260K tokenizer for the truncation.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/tasks.h"
#include "kvsqueeze/model.h"
#include "test_paths.h"

using namespace kvsqueeze;
using namespace kvsqueeze::eval;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const Tokenizer& tokenizer() {
  static const auto model = Model::load(test_paths::stories260k());
  return model->tokenizer();
}

json record(const std::string& id, const std::string& input, const std::string& context,
            std::vector<std::string> answers = {"an answer"}, json all_classes = nullptr) {
  return {{"input", input},      {"context", context},         {"answers", answers}, {"length", 42},
          {"dataset", "x"},      {"language", "en"},           {"all_classes", all_classes}, {"_id", id}};
}

class EvalLongBench : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(test_paths::scratch_dir()) / ("longbench" + test_paths::process_tag() + "-" +
                                                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write(const std::string& dataset, const std::vector<std::string>& lines) {
    std::ofstream out(dir_ / (dataset + ".jsonl"));
    for (const auto& l : lines) out << l << "\n";
  }
  LongBenchOptions options(int64_t max_length = 0, int64_t limit = 0) const {
    LongBenchOptions o;
    o.folder = dir_.string();
    o.max_length = max_length;
    o.limit = limit;
    return o;
  }
  std::string error_of(const std::string& dataset, const LongBenchOptions& o) {
    try {
      longbench_samples(dataset, o, tokenizer());
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  fs::path dir_;
};

}  // namespace

TEST_F(EvalLongBench, DatasetNamesAreTheSupportedOnes) {
  const auto names = longbench_dataset_names();
  EXPECT_EQ(names.size(), 18u);  // 16 English + lsht + passage_retrieval_zh (no jieba needed)
  for (const char* name : {"narrativeqa", "qasper", "gov_report", "trec", "lcc", "repobench-p", "lsht", "passage_retrieval_zh"})
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  for (const char* name : {"multifieldqa_zh", "dureader", "vcsum"})
    EXPECT_EQ(std::find(names.begin(), names.end(), name), names.end()) << name;
}

TEST_F(EvalLongBench, OfficialTemplateSplitAtTheEndOfTheContext) {
  write("multifieldqa_en", {record("id-1", "Who wrote it?", "Some text.\nMore text.", {"Ann", "Bob"}).dump(),
                            record("id-2", "When?", "Other text.").dump()});
  const auto samples = longbench_samples("multifieldqa_en", options(), tokenizer());
  ASSERT_EQ(samples.size(), 2u);
  const Sample& s = samples[0];
  // dataset2prompt.json's multifieldqa_en template, filled in by hand.
  EXPECT_EQ(s.context, "Read the following text and answer briefly.\n\nSome text.\nMore text.");
  EXPECT_EQ(s.question,
            "\n\nNow, answer the following question based on the above text, only give me the answer and do not "
            "output any other words.\n\nQuestion: Who wrote it?\nAnswer:");
  EXPECT_EQ(s.answer_prefix, "");
  EXPECT_EQ(s.task, "longbench/multifieldqa_en");
  EXPECT_EQ(s.id, "id-1");
  EXPECT_EQ(s.references, (std::vector<std::string>{"Ann", "Bob"}));
  EXPECT_EQ(s.metric, "qa_f1");
  EXPECT_EQ(s.max_new_tokens, 64);  // dataset2maxlen.json
  EXPECT_FALSE(s.first_line_only);
  EXPECT_EQ(s.meta.at("length"), 42);
  EXPECT_EQ(s.meta.at("chat_template"), true);
  EXPECT_EQ(samples[1].id, "id-2");
}

TEST_F(EvalLongBench, FewShotAndCodeDatasets) {
  const std::vector<std::string> classes = {"Location", "Number"};
  write("trec", {record("t1", "What is the capital of France?\nType:", "Q: How far? Type: Number", {"Location"}, classes).dump()});
  auto trec = longbench_samples("trec", options(), tokenizer());
  ASSERT_EQ(trec.size(), 1u);
  EXPECT_EQ(trec[0].context,
            "Please determine the type of the question below. Here are some examples of questions.\n\nQ: How far? Type: Number");
  EXPECT_EQ(trec[0].question, "\nWhat is the capital of France?\nType:");
  EXPECT_EQ(trec[0].metric, "classification");
  EXPECT_EQ(trec[0].all_classes, classes);
  EXPECT_TRUE(trec[0].first_line_only);
  EXPECT_EQ(trec[0].meta.at("chat_template"), false);  // pred.py: no chat template for few-shot tasks

  write("lcc", {record("c1", "", "def f():\n    return 1\n", {"    return 2"}).dump()});
  auto lcc = longbench_samples("lcc", options(), tokenizer());
  ASSERT_EQ(lcc.size(), 1u);
  EXPECT_EQ(lcc[0].context, "Please complete the code given below. \ndef f():\n    return 1\n");
  EXPECT_EQ(lcc[0].question, "Next line of code:\n");
  EXPECT_EQ(lcc[0].metric, "code_sim");

  // Text that looks like a placeholder inside the data is never substituted (str.format semantics).
  write("repobench-p", {record("r1", "x = '{context}'\n", "import os\n{input}\n").dump()});
  auto repo = longbench_samples("repobench-p", options(), tokenizer());
  EXPECT_EQ(repo[0].context, "Please complete the code given below. \nimport os\n{input}\n");
  EXPECT_EQ(repo[0].question, "x = '{context}'\nNext line of code:\n");
}

TEST_F(EvalLongBench, TruncatesTheMiddleKeepingHeadAndTail) {
  std::string context;
  for (int i = 0; i < 300; ++i) context += "Once upon a time there was a little girl number " + std::to_string(i) + ". ";
  write("hotpotqa", {record("h1", "Who was she?", context).dump()});
  const int64_t max_length = 600;  // stories260K's 512-piece vocabulary needs ~100 tokens for the question
  const auto full = longbench_samples("hotpotqa", options(), tokenizer());
  const auto cut = longbench_samples("hotpotqa", options(max_length), tokenizer());
  ASSERT_EQ(cut.size(), 1u);
  const std::string full_prompt = full[0].context + full[0].question;
  const auto ids = tokenizer().encode(full_prompt, tokenizer().add_bos_by_default());
  ASSERT_GT(static_cast<int64_t>(ids.size()), max_length);
  EXPECT_EQ(cut[0].meta.at("truncated"), true);
  EXPECT_EQ(cut[0].meta.at("prompt_tokens"), ids.size());

  // pred.py: decode(first max_length/2 ids) + decode(last max_length/2 ids), special tokens
  // skipped; here the halves shrink by a token or two when the joined text re-tokenizes longer.
  const size_t half = cut[0].meta.at("kept_half_tokens");
  EXPECT_LE(half, static_cast<size_t>(max_length / 2));
  EXPECT_GE(half, static_cast<size_t>(max_length / 2 - 4));
  const std::string head = tokenizer().decode({ids.begin(), ids.begin() + half}, true);
  const std::string tail = tokenizer().decode({ids.end() - half, ids.end()}, true);
  EXPECT_EQ(cut[0].context + cut[0].question, head + tail);
  // The question survives whole; the context keeps its start and its end, not its middle.
  EXPECT_EQ(cut[0].question, full[0].question);
  EXPECT_TRUE(full[0].context.starts_with(head)) << head;
  EXPECT_TRUE(full[0].context.ends_with(cut[0].context.substr(head.size())));
  EXPECT_EQ(cut[0].context.find("number 150."), std::string::npos);
  EXPECT_LE(tokenizer().encode(cut[0].context + cut[0].question, tokenizer().add_bos_by_default()).size(),
            static_cast<size_t>(max_length));

  // A prompt that fits is untouched.
  const auto roomy = longbench_samples("hotpotqa", options(static_cast<int64_t>(ids.size())), tokenizer());
  EXPECT_EQ(roomy[0].context + roomy[0].question, full_prompt);
  EXPECT_EQ(roomy[0].meta.at("truncated"), false);

  // A budget smaller than twice the question: the cut goes through the question; the text is
  // still pred.py's, split at the cut.
  const auto tight = longbench_samples("hotpotqa", options(64), tokenizer());
  EXPECT_EQ(tight[0].meta.at("question_truncated"), true);
  const size_t tight_half = tight[0].meta.at("kept_half_tokens");
  EXPECT_EQ(tight[0].context + tight[0].question, tokenizer().decode({ids.begin(), ids.begin() + tight_half}, true) +
                                                      tokenizer().decode({ids.end() - tight_half, ids.end()}, true));
  EXPECT_LE(tokenizer().encode(tight[0].context + tight[0].question, tokenizer().add_bos_by_default()).size(), 64u);
  EXPECT_TRUE(full[0].question.ends_with(tight[0].question));
}

TEST_F(EvalLongBench, LimitAndLongBenchE) {
  write("qasper_e", {record("a", "q1", "c1").dump(), "", record("b", "q2", "c2").dump(), record("c", "q3", "c3").dump()});
  const auto samples = longbench_samples("qasper_e", options(0, 2), tokenizer());
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(samples[1].id, "b");
  EXPECT_EQ(samples[0].task, "longbench/qasper_e");
  EXPECT_EQ(samples[0].metric, "qa_f1");
  EXPECT_EQ(samples[0].max_new_tokens, 128);
}

TEST_F(EvalLongBench, BadInputGivesOneClearError) {
  LongBenchOptions missing = options();
  missing.folder = (dir_ / "nowhere").string();
  EXPECT_NE(error_of("qasper", missing).find("does not exist"), std::string::npos);
  EXPECT_NE(error_of("qasper", options()).find("qasper.jsonl"), std::string::npos);  // no file

  const std::string unknown = error_of("qaspr", options());
  EXPECT_NE(unknown.find("unknown LongBench dataset 'qaspr'"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("narrativeqa"), std::string::npos) << unknown;  // lists the valid ones
  EXPECT_NE(error_of("dureader", options()).find("needs jieba segmentation, not supported"), std::string::npos);

  write("qasper", {record("a", "q", "c").dump(), "{\"input\": \"q\", \"context\": "});
  const std::string malformed = error_of("qasper", options());
  EXPECT_NE(malformed.find("qasper.jsonl:2: malformed JSON"), std::string::npos) << malformed;

  json no_answers = record("a", "q", "c");
  no_answers.erase("answers");
  write("qasper", {no_answers.dump()});
  EXPECT_NE(error_of("qasper", options()).find(":1: missing field \"answers\""), std::string::npos);

  json bad_type = record("a", "q", "c");
  bad_type["context"] = 5;
  write("qasper", {bad_type.dump()});
  EXPECT_NE(error_of("qasper", options()).find("\"context\" must be a string"), std::string::npos);

  write("qasper", {record("a", "q", "c").dump(), record("a", "q", "c").dump()});
  EXPECT_NE(error_of("qasper", options()).find("duplicate _id 'a'"), std::string::npos);

  write("trec", {record("t", "q", "c", {"Location"}).dump()});
  EXPECT_NE(error_of("trec", options()).find("all_classes"), std::string::npos);

  write("qasper", {"[1, 2]"});
  EXPECT_NE(error_of("qasper", options()).find("must be a JSON object"), std::string::npos);
}

// The same truncation with the default model's tokenizer (Gemma 3: BOS added, 262k pieces).
TEST(EvalLongBenchDefaultModel, TruncationFitsAndKeepsTheQuestion) {
  const std::string path = test_paths::gemma_model();
  if (path.empty()) GTEST_SKIP() << "default model absent (scripts/get_default_model.sh)";
  const auto model = Model::load(path);
  const Tokenizer& tok = model->tokenizer();
  const fs::path dir = fs::path(test_paths::scratch_dir()) / ("longbench-gemma" + test_paths::process_tag());
  fs::create_directories(dir);
  std::string context;
  for (int i = 0; i < 400; ++i) context += "Paragraph " + std::to_string(i) + ": the quick brown fox jumps over the lazy dog. ";
  {
    std::ofstream out(dir / "passage_retrieval_en.jsonl");
    out << record("p1", "A fox jumps.", context, {"Paragraph 7"}).dump() << "\n";
  }
  LongBenchOptions o;
  o.folder = dir.string();
  const auto full = longbench_samples("passage_retrieval_en", o, tok);
  o.max_length = 1000;
  const auto cut = longbench_samples("passage_retrieval_en", o, tok);
  fs::remove_all(dir);
  ASSERT_EQ(cut.size(), 1u);
  EXPECT_EQ(cut[0].meta.at("truncated"), true);
  EXPECT_EQ(cut[0].question, full[0].question);
  EXPECT_TRUE(full[0].context.starts_with(cut[0].context.substr(0, 200)));
  EXPECT_LE(tok.encode(cut[0].context + cut[0].question, tok.add_bos_by_default()).size(), 1000u);
  EXPECT_GE(tok.encode(cut[0].context + cut[0].question, tok.add_bos_by_default()).size(), 990u);
}
