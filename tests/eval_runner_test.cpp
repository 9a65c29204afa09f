// The evaluation runner: per-token divergence on hand-computed cases, the grid and its errors,
// KL/perplexity and generation grids on stories260K (baseline exactly zero divergence, answers
// equal to `generate`'s, shared prefill where possible), and resume after an interrupted write.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "cli_runner.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/report.h"
#include "kvsqueeze/eval/runner.h"
#include "test_paths.h"

using namespace kvsqueeze;
using namespace kvsqueeze::eval;

namespace {

std::string fresh_dir(const std::string& name) {
  const std::string d = test_paths::scratch_dir() + "/eval_runner_" + name + test_paths::process_tag();
  std::filesystem::remove_all(d);
  return d;
}

const std::string kStory =
    "Once upon a time there was a little girl named Lily. She loved to play outside with her dog Max. "
    "One day Lily and Max went to the park. They saw a big red ball under a tree. Lily kicked the ball and Max ran after it. "
    "Then it started to rain, so they went home and had warm soup with mom. ";

std::string long_story(int copies) {
  std::string s;
  for (int i = 0; i < copies; ++i) s += kStory;
  return s;
}

EvalSettings settings(const std::string& kind, const std::string& out) {
  EvalSettings s;
  s.kind = kind;
  s.model_path = test_paths::stories260k();
  s.presses = {"knorm", "snapkv"};
  s.ratios = {0.5};
  s.session.threads = 1;
  s.session.chunk = 64;
  s.out_dir = out;
  return s;
}

}  // namespace

TEST(EvalTokenDivergence, HandComputedTwoTokenCase) {
  // ref p = (.5, .5); test p = (.75, .25).  KL = .5 ln(.5/.75) + .5 ln(.5/.25) = 0.1438410362;
  // target 1: -log p_ref = ln 2, -log p_test = ln 4.
  const float ref[2] = {0.0f, 0.0f}, test[2] = {std::log(3.0f), 0.0f};
  const TokenDivergence d = token_divergence(ref, test, 2, 1);
  EXPECT_NEAR(d.kl, 0.5 * std::log(0.5 / 0.75) + 0.5 * std::log(2.0), 1e-7);
  EXPECT_NEAR(d.nll_ref, std::log(2.0), 1e-7);
  EXPECT_NEAR(d.nll_test, std::log(4.0), 1e-7);
  EXPECT_NEAR(d.abs_dlogp, std::log(2.0), 1e-7);
  EXPECT_TRUE(d.top1_agree);
  const float flipped[2] = {0.0f, 1.0f};
  EXPECT_FALSE(token_divergence(test, flipped, 2, 0).top1_agree);
  EXPECT_EQ(token_divergence(test, test, 2, 0).kl, 0.0);
}

TEST(EvalGrid, BaselineFirstThenPressesTimesRatios) {
  EvalSettings s = settings("kld", "unused");
  s.presses = {"knorm", "adakv(snapkv,alpha_safeguard=0.3)"};
  s.ratios = {0.25, 0.75};
  s.press_opts = {"snapkv.window_size=8"};
  const auto grid = make_grid(s);
  ASSERT_EQ(grid.size(), 5u);
  EXPECT_EQ(grid[0].label(), "none");
  EXPECT_EQ(grid[1].label(), "knorm@0.25");
  EXPECT_TRUE(grid[1].options.empty());  // snapkv's option does not reach knorm
  EXPECT_EQ(grid[4].label(), "adakv(snapkv,alpha_safeguard=0.3)@0.75");
  EXPECT_EQ(grid[4].options, std::vector<std::string>{"snapkv.window_size=8"});
}

TEST(EvalGrid, MergeOptionWrapsEveryPress) {
  EvalSettings s = settings("kld", "unused");
  s.presses = {"knorm", "adakv(snapkv)"};
  s.ratios = {0.5};
  s.press_opts = {"merge=similarity", "merging.similarity_threshold=0.2", "snapkv.window_size=8"};
  const auto grid = make_grid(s);
  ASSERT_EQ(grid.size(), 3u);
  EXPECT_EQ(grid[1].options, (std::vector<std::string>{"merge=similarity", "merging.similarity_threshold=0.2"}));
  EXPECT_EQ(grid[2].options, s.press_opts);
  s.press_opts = {"merge=pool"};
  EXPECT_THROW(make_grid(s), Error);
  s.press_opts = {"cam.merge_budget=4"};  // no cam without merge=cam
  EXPECT_THROW(make_grid(s), Error);
}

TEST(EvalKld, MergedCellsShareThePrefill) {
  auto model = Model::load(test_paths::stories260k());
  const auto texts = kld_windows(*model, long_story(12), {96}, 24, 1, 3);
  auto run = [&](const std::string& tag, const std::vector<std::string>& opts) {
    const std::string out = fresh_dir(tag);
    EvalSettings s = settings("kld", out);
    s.presses = {"knorm", "snapkv(window_size=8)"};
    s.ratios = {0.5};
    s.press_opts = opts;
    EXPECT_EQ(run_kld_eval(*model, texts, s), 3);
    std::map<std::string, double> kl;
    for (const auto& r : read_results(out + "/results.jsonl")) {
      EXPECT_TRUE(r["shared_prefill"].get<bool>()) << r.dump();
      kl[r["press"].get<std::string>()] = r["metrics"]["kl"].get<double>();
    }
    return kl;
  };
  const auto plain = run("kld_plain", {}), merged = run("kld_merged", {"merge=similarity"}), cam = run("kld_cam", {"merge=cam"});
  for (const std::string p : {"knorm", "snapkv(window_size=8)"}) {
    EXPECT_GT(merged.at(p), 0.0);
    EXPECT_NE(merged.at(p), plain.at(p)) << p;  // merged values change the continuation's logits
    EXPECT_NE(cam.at(p), plain.at(p)) << p;
  }
}

TEST(EvalGrid, BadGridsAreOneClearError) {
  auto expect_error = [](EvalSettings s, const std::string& needle) {
    try {
      make_grid(s);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  // Each case changes the default settings and names what the error must mention.
  const std::vector<std::pair<std::function<void(EvalSettings&)>, std::string>> cases = {
      {[](EvalSettings& s) { s.presses = {"snapk"}; }, "snapk"},
      {[](EvalSettings& s) { s.ratios = {1.0}; }, "[0, 1)"},
      {[](EvalSettings& s) { s.press_opts = {"window_size=8"}; }, "ambiguous"},
      {[](EvalSettings& s) { s.press_opts = {"tova.window_size=8"}; }, "tova"},
      {[](EvalSettings& s) { s.presses = {"snapkv"}; s.press_opts = {"window_sise=8"}; }, "window_sise"},
      {[](EvalSettings& s) { s.presses = {"snapkv@half"}; }, "'half' after '@' is not a ratio"},
      {[](EvalSettings& s) { s.presses = {"snapkv@1.5"}; }, "[0, 1)"},
      {[](EvalSettings& s) { s.presses = {"snapkv"}; s.ratios.clear(); }, "`ratios` needs at least one value"},  // no --ratio, no @R
  };
  for (const auto& [change, needle] : cases) {
    EvalSettings s = settings("kld", "unused");
    change(s);
    expect_error(s, needle);
  }
}

TEST(EvalGrid, PressAtRatioAddsOneCellToTheSharedGrid) {
  EvalSettings s = settings("kld", "unused");
  s.presses = {"knorm", "knorm@0.25", "adakv(snapkv(window_size=8))@0.75", "knorm@0.5"};
  s.ratios = {0.5};
  const auto grid = make_grid(s);
  ASSERT_EQ(grid.size(), 4u);  // knorm@0.5 twice is one cell
  EXPECT_EQ(grid[1].label(), "knorm@0.5");
  EXPECT_EQ(grid[2].label(), "knorm@0.25");
  EXPECT_EQ(grid[3].press, "adakv(snapkv(window_size=8))");
  EXPECT_EQ(grid[3].ratio, 0.75);
  s.ratios.clear();
  s.presses = {"knorm@0.25"};
  EXPECT_EQ(make_grid(s).size(), 2u);  // every press fixed: --ratio may be left out
}

TEST(EvalKld, BaselineIsExactAndCompressionDivergesAndResumes) {
  auto model = Model::load(test_paths::stories260k());
  const std::string out = fresh_dir("kld");
  EvalSettings s = settings("kld", out);
  s.presses = {"knorm", "snapkv(window_size=8)", "streaming_llm"};  // windows below the budgets: ratios are exact
  s.ratios = {0.5, 0.75};
  const auto texts = kld_windows(*model, long_story(12), {96, 160}, 24, 2, 7);
  ASSERT_EQ(texts.size(), 4u);
  EXPECT_EQ(texts[0].context.size(), 96u);
  EXPECT_EQ(texts[3].continuation.size(), 24u);
  EXPECT_EQ(run_kld_eval(*model, texts, s), 4 * 7);
  const auto results = read_results(out + "/results.jsonl");
  ASSERT_EQ(results.size(), 28u);
  for (const auto& r : results) {
    const auto& m = r["metrics"];
    EXPECT_TRUE(r["shared_prefill"].get<bool>());
    if (r["press"] == "none") {
      EXPECT_EQ(m["kl"].get<double>(), 0.0);
      EXPECT_EQ(m["top1"].get<double>(), 1.0);
      EXPECT_EQ(m["ppl_ratio"].get<double>(), 1.0);
      EXPECT_NEAR(r["achieved_ratio"].get<double>(), 0.0, 1e-12);
    } else {
      EXPECT_GT(m["kl"].get<double>(), 0.0) << r.dump();
      EXPECT_LT(r["kv_bytes_held"].get<double>(), r["kv_bytes_full"].get<double>());
      // kvpress's rule int(len (1 - r)) per head: within one slot of the ratio.
      const double ctx = r["context_tokens"].get<double>();
      EXPECT_NEAR(r["achieved_ratio"].get<double>(), r["ratio"].get<double>(), 1.0 / ctx + 1e-9) << r.dump();
    }
  }
  // Deeper compression diverges more (on average over the windows).
  double kl50 = 0, kl75 = 0;
  for (const auto& r : results)
    if (r["press"] == "knorm") (r["ratio"] == 0.5 ? kl50 : kl75) += r["metrics"]["kl"].get<double>();
  EXPECT_LT(kl50, kl75);
  // Nothing left to do: a second run appends nothing.
  EXPECT_EQ(run_kld_eval(*model, texts, s), 0);
  // An interrupted write (half a line at the end) is redone, and only that.
  const std::string path = out + "/results.jsonl";
  std::string text = slurp(path);
  text.resize(text.size() - 40);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  EXPECT_EQ(run_kld_eval(*model, texts, s), 1);
  EXPECT_EQ(read_results(path).size(), 28u);
}

TEST(EvalKld, DecodingTimeCompressionGetsItsOwnPrefill) {
  auto model = Model::load(test_paths::stories260k());
  const std::string out = fresh_dir("kld_decode");
  EvalSettings s = settings("ppl", out);
  s.presses = {"knorm"};
  s.policy.decode_interval = 8;
  s.policy.decode_target = 48;
  const auto texts = kld_windows(*model, long_story(12), {96}, 32, 1, 3);
  EXPECT_EQ(run_kld_eval(*model, texts, s), 2);
  const auto results = read_results(out + "/results.jsonl");
  ASSERT_EQ(results.size(), 2u);
  EXPECT_TRUE(results[0]["shared_prefill"].get<bool>());  // the baseline
  EXPECT_FALSE(results[1]["shared_prefill"].get<bool>());
  EXPECT_GT(results[1]["metrics"]["kl"].get<double>(), 0.0);
  EXPECT_EQ(results[1]["score"].get<double>(), results[1]["metrics"]["ppl"].get<double>());  // ppl's score is perplexity
}

// A hand-made question on stories260K's kind of text, answered in 12 tokens.
static Sample lily_kicks() {
  Sample a;
  a.task = "handmade";
  a.id = "lily";
  a.context = long_story(3);
  a.question = " What did Lily kick?";
  a.references = {"ball"};
  a.metric = "string_match_all";
  a.max_new_tokens = 12;
  return a;
}

TEST(EvalGeneration, AnswersEqualGenerateWithTheSamePress) {
  auto model = Model::load(test_paths::stories260k());
  const std::string out = fresh_dir("gen");
  EvalSettings s = settings("niah", out);
  s.presses = {"snapkv", "knorm"};
  s.ratios = {0.5};
  s.session.chunk = 512;  // one chunk: the same arithmetic as generate's (see shared_prefill_test)
  const Sample a = lily_kicks();
  EXPECT_EQ(run_generation_eval(*model, {a}, s), 3);
  const auto results = read_results(out + "/results.jsonl");
  ASSERT_EQ(results.size(), 3u);
  for (const auto& r : results) {
    const std::string press = r["press"];
    std::string args = "generate -m " + test_paths::stories260k() + " -p \"" + a.context + "\" -q \"" + a.question +
                       "\" -n 12 --json -t 1";
    if (press != "none") args += " --press " + press + " --ratio 0.5";
    const CliResult g = run_cli(args);
    ASSERT_EQ(g.status, 0) << g.err;
    const auto j = nlohmann::json::parse(g.out);
    EXPECT_EQ(r["prediction"].get<std::string>(), j["answers"][0]["text"].get<std::string>()) << press;
    const double want = j["answers"][0]["text"].get<std::string>().find("ball") != std::string::npos ? 1.0 : 0.0;
    EXPECT_EQ(r["score"].get<double>(), want) << press;
    EXPECT_EQ(r["kv_bytes_held"].get<size_t>() > 0, true);
  }
}

// A query-aware-only press (finch: its window_size is the question's length, set per question)
// passes the grid's checks and answers as generate does with it.
TEST(EvalGeneration, QueryAwarePressAnswersEqualGenerate) {
  auto model = Model::load(test_paths::stories260k());
  const std::string out = fresh_dir("gen_finch");
  EvalSettings s = settings("niah", out);
  s.presses = {"finch"};
  s.ratios = {0.5};
  s.query_aware = true;
  s.session.chunk = 512;
  const Sample a = lily_kicks();
  EXPECT_EQ(run_generation_eval(*model, {a}, s), 2);
  const auto results = read_results(out + "/results.jsonl");
  ASSERT_EQ(results.size(), 2u);
  const auto& r = results[1];
  ASSERT_EQ(r["press"], "finch");
  const CliResult g = run_cli("generate -m " + test_paths::stories260k() + " -p \"" + a.context + "\" -q \"" + a.question +
                              "\" -n 12 --json -t 1 --press finch --ratio 0.5");
  ASSERT_EQ(g.status, 0) << g.err;
  const auto j = nlohmann::json::parse(g.out);
  EXPECT_EQ(r["prediction"].get<std::string>(), j["answers"][0]["text"].get<std::string>());
  EXPECT_NEAR(r["achieved_ratio"].get<double>(), 0.5, 0.05);
  // Re-rotated keys are renumbered 0..kept-1; the full size still counts every token evaluated.
  const auto& none = results[0];
  const double per_token = none["kv_bytes_full"].get<double>() / none["context_tokens"].get<double>();
  EXPECT_EQ(r["kv_bytes_full"].get<double>(), per_token * r["context_tokens"].get<double>());
  EXPECT_LT(r["kv_bytes_held"].get<double>(), 0.6 * r["kv_bytes_full"].get<double>());
}

TEST(EvalCli, BadInvocationsAreOneLineErrors) {
  const std::string m = " -m " + test_paths::stories260k();
  for (const std::string& args : {"eval nonsense -o /tmp/x" + m, "eval kld" + m, "eval kld -o " + fresh_dir("cli") + m + " --press snapk --ratio 0.5",
                                 "eval kld -o " + fresh_dir("cli") + m + " --press snapkv --ratio 1.5",
                                 "eval kld -o " + fresh_dir("cli") + m + " --lengths 100000",
                                 "eval ruler -o " + fresh_dir("cli") + m + " --tasks nope",
                                 "eval longbench -o " + fresh_dir("cli") + m}) {
    const CliResult r = run_cli(args);
    EXPECT_NE(r.status, 0) << args;
    EXPECT_EQ(r.err_lines(), 1) << args << "\n" << r.err;
    EXPECT_EQ(r.status < 128, true) << args;
  }
}

TEST(EvalTokenDivergence, VectorisedMatchesDoublePrecisionOnAWideVocabulary) {
  // 70001 entries (not a multiple of 16: the scalar tail runs too), logits spread like an LM's.
  const int64_t V = 70001;
  std::vector<float> a(V), b(V);
  uint64_t x = 99;
  for (int64_t i = 0; i < V; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    a[static_cast<size_t>(i)] = static_cast<float>((x >> 40) % 20000) / 1000.0f - 10.0f;
    b[static_cast<size_t>(i)] = a[static_cast<size_t>(i)] + static_cast<float>((x >> 20) % 1000) / 2000.0f;
  }
  double za = 0, zb = 0, ma = -1e30, mb = -1e30;
  for (int64_t i = 0; i < V; ++i) ma = std::max<double>(ma, a[static_cast<size_t>(i)]), mb = std::max<double>(mb, b[static_cast<size_t>(i)]);
  for (int64_t i = 0; i < V; ++i) za += std::exp(a[static_cast<size_t>(i)] - ma), zb += std::exp(b[static_cast<size_t>(i)] - mb);
  za = ma + std::log(za), zb = mb + std::log(zb);
  double kl = 0;
  for (int64_t i = 0; i < V; ++i) {
    const double la = a[static_cast<size_t>(i)] - za, lb = b[static_cast<size_t>(i)] - zb;
    kl += std::exp(la) * (la - lb);
  }
  const TokenDivergence d = token_divergence(a.data(), b.data(), V, 5);
  EXPECT_NEAR(d.kl, kl, 1e-6 * std::max(1.0, kl));
  EXPECT_NEAR(d.nll_ref, za - a[5], 1e-5);
  EXPECT_NEAR(d.nll_test, zb - b[5], 1e-5);
  EXPECT_EQ(token_divergence(a.data(), a.data(), V, 5).kl, 0.0);
}

TEST(EvalCli, NiahRulerAndLongBenchRunEndToEndAndResume) {
  const std::string m = " -m " + test_paths::stories260k() + " -t 1";
  // NIAH: heat maps per press and ratio, results per length x depth cell.
  const std::string niah = fresh_dir("cli_niah");
  CliResult r = run_cli("eval niah" + m + " --press knorm --ratio 0.5 --lengths 256,384 --depths 0,100 -o " + niah);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(read_results(niah + "/results.jsonl").size(), 8u);  // 4 cells x (none, knorm@0.5)
  EXPECT_TRUE(std::filesystem::exists(niah + "/niah_knorm_0.5.png"));
  EXPECT_TRUE(std::filesystem::exists(niah + "/summary.md"));
  EXPECT_NE(r.out.find("| niah | knorm | 0.5 |"), std::string::npos) << r.out;
  // The same command again has nothing to do.
  r = run_cli("eval niah" + m + " --press knorm --ratio 0.5 --lengths 256,384 --depths 0,100 -o " + niah);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("0 new results"), std::string::npos) << r.err;
  // RULER: two tasks, two samples each.
  const std::string ruler = fresh_dir("cli_ruler");
  r = run_cli("eval ruler" + m + " --press snapkv --ratio 0.25 --lengths 500 --tasks niah_single_1,niah_single_2 --samples 2 -o " + ruler);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto rr = read_results(ruler + "/results.jsonl");
  ASSERT_EQ(rr.size(), 8u);
  for (const auto& x : rr) {
    EXPECT_GE(x["score"].get<double>(), 0.0);
    EXPECT_LE(x["score"].get<double>(), 1.0);
    EXPECT_LE(x["context_tokens"].get<int64_t>(), 500 - 128);
  }
  // LongBench: a two-sample trec file in the official format.
  const std::string lb = fresh_dir("cli_lb"), data = lb + "_data";
  std::filesystem::create_directories(data);
  std::ofstream(data + "/trec.jsonl")
      << R"({"input": "What is the capital of France?", "context": "Question: Who wrote Hamlet?\nType: Individual\n", "answers": ["City"], "length": 20, "dataset": "trec", "language": "en", "all_classes": ["City", "Individual", "Country"], "_id": "t1"})"
      << "\n"
      << R"({"input": "Who painted the Mona Lisa?", "context": "Question: What is the largest city?\nType: City\n", "answers": ["Individual"], "length": 20, "dataset": "trec", "language": "en", "all_classes": ["City", "Individual", "Country"], "_id": "t2"})"
      << "\n";
  r = run_cli("eval longbench" + m + " --press tova --ratio 0.5 --longbench-dir " + data + " --datasets trec -o " + lb);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto lr = read_results(lb + "/results.jsonl");
  ASSERT_EQ(lr.size(), 4u);
  for (const auto& x : lr) {
    EXPECT_EQ(x["task"], "longbench/trec");
    EXPECT_EQ(x["prediction"].get<std::string>().find('\n'), std::string::npos);  // cut at the first line
  }
  std::filesystem::remove_all(data);
}

TEST(EvalKld, CellsBeyondTheGridMemoryTakeAnotherPrefillWithTheSameResults) {
  auto model = Model::load(test_paths::stories260k());
  const auto texts = kld_windows(*model, long_story(12), {400}, 16, 1, 5);
  std::vector<std::vector<nlohmann::json>> runs;
  for (int64_t mib : {4096, 1}) {  // 1 MiB: about four of stories' 400-token copies (290 KB each when full) per prefill
    const std::string out = fresh_dir("kld_grid_memory_" + std::to_string(mib));
    EvalSettings s = settings("kld", out);
    s.presses = {"knorm", "tova", "snapkv(window_size=8)"};
    s.ratios = {0.25, 0.5};
    s.grid_memory_mib = mib;
    EXPECT_EQ(run_kld_eval(*model, texts, s), 7);
    runs.push_back(read_results(out + "/results.jsonl"));
  }
  ASSERT_EQ(runs[0].size(), runs[1].size());
  for (size_t i = 0; i < runs[0].size(); ++i) {
    EXPECT_EQ(runs[0][i]["key"], runs[1][i]["key"]);
    EXPECT_EQ(runs[0][i]["metrics"], runs[1][i]["metrics"]) << runs[0][i]["key"];
  }
}

TEST(EvalKld, ConsecutiveWindowsAreTheTextsFirstChunks) {
  auto model = Model::load(test_paths::stories260k());
  const std::string text = long_story(12);
  const std::vector<int32_t> ids = model->tokenizer().encode(text, false);
  const auto texts = kld_windows(*model, text, {96}, 24, 3, 5, true);
  ASSERT_EQ(texts.size(), 3u);
  const int64_t body = 96 - (model->tokenizer().add_bos_by_default() ? 1 : 0), need = body + 24;
  for (int64_t w = 0; w < 3; ++w) {  // chunk w: tokens [w * need, (w + 1) * need), as llama-perplexity cuts them
    const auto& t = texts[static_cast<size_t>(w)];
    EXPECT_EQ(t.meta["offset"].get<int64_t>(), w * need);
    EXPECT_TRUE(std::equal(t.continuation.begin(), t.continuation.end(), ids.begin() + w * need + body));
    EXPECT_EQ(t.context.back(), ids[static_cast<size_t>(w * need + body - 1)]);
  }
  const auto many = static_cast<int64_t>(ids.size()) / need + 1;
  EXPECT_THROW(kld_windows(*model, text, {96}, 24, many, 5, true), Error) << "more chunks than the text holds";
}
