// Bad input to the CLI: one clear line on stderr, a non-zero exit, nothing on stdout, no crash.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "kvsqueeze/device.h"

namespace {

std::string write_bytes(const std::string& name, const std::string& bytes) {
  std::string path = test_paths::scratch_dir();
  path.append("/").append(test_paths::process_tag()).append(name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

void expect_clean_error(const CliResult& r, const std::string& needle) {
  EXPECT_NE(r.status, 0);
  EXPECT_LT(r.status, 128) << "killed by a signal: " << r.err;
  EXPECT_EQ(r.err_lines(), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr: " << r.err;
  EXPECT_TRUE(r.out.empty()) << "stdout: " << r.out;
}

const std::string kStories = test_paths::stories260k();

}  // namespace

TEST(CliErrors, MissingModelFile) { expect_clean_error(run_cli("inspect /nonexistent/model.gguf"), "cannot open"); }

TEST(CliErrors, WrongMagic) {
  expect_clean_error(run_cli("inspect " + write_bytes("magic.gguf", std::string(4096, 'x'))), "wrong magic");
}

TEST(CliErrors, TooShortToBeGguf) {
  expect_clean_error(run_cli("inspect " + write_bytes("short.gguf", "GGUF\x03")), "not a GGUF file");
}

TEST(CliErrors, TruncatedModel) {
  const std::string whole = slurp(kStories);
  for (size_t cut : {size_t{30}, size_t{300}, whole.size() / 2, whole.size() - 1}) {
    SCOPED_TRACE(cut);
    expect_clean_error(run_cli("inspect " + write_bytes("cut.gguf", whole.substr(0, cut))), "truncated");
  }
}

TEST(CliErrors, UnknownArchitecture) {
  std::string bytes = slurp(kStories);
  const std::string key = "general.architecture";
  const size_t at = bytes.find(key);
  ASSERT_NE(at, std::string::npos);
  const size_t value = bytes.find("llama", at + key.size());
  ASSERT_NE(value, std::string::npos);
  bytes.replace(value, 5, "llamb");
  expect_clean_error(run_cli("inspect " + write_bytes("arch.gguf", bytes)), "unknown architecture 'llamb'");
}

TEST(CliErrors, MissingTensor) {
  std::string bytes = slurp(kStories);
  const size_t at = bytes.find("blk.2.ffn_up.weight");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 5, "blk.9");  // same length: the file stays well formed
  expect_clean_error(run_cli("inspect " + write_bytes("tensor.gguf", bytes)), "missing tensor 'blk.2.ffn_up.weight'");
}

TEST(CliErrors, UnknownPress) {
  expect_clean_error(run_cli("generate -m " + kStories + " -p hi --press nosuchpress"), "unknown press 'nosuchpress'");
}

TEST(CliErrors, RatioOutOfRange) {
  expect_clean_error(run_cli("generate -m " + kStories + " -p hi --ratio 1.5"), "--ratio must be in [0, 1)");
}

TEST(CliErrors, UnknownOrMissingDevice) {
  expect_clean_error(run_cli("generate -m " + kStories + " -p hi -n 1 --device tpu"), "unknown device 'tpu' (valid: cpu, cuda)");
  if (kvsqueeze::device_available(kvsqueeze::Device::Cuda)) return;  // a GPU machine runs it
  expect_clean_error(run_cli("serve -m " + kStories + " --device cuda --port 0"), "device 'cuda' is not available");
  expect_clean_error(run_cli("generate -m " + kStories + " -p hi -n 1 --device cuda"), "device 'cuda' is not available");
}

TEST(CliErrors, ContextLongerThanAllowed) {
  expect_clean_error(run_cli("generate -m " + kStories + " -p 'Once upon a time there was a dog' --ctx-size 4 -n 1"),
                     "exceeds the context size 4");
  expect_clean_error(run_cli("generate -m " + kStories + " -p hi --ctx-size 999999"), "--ctx-size must be between");
}

TEST(CliErrors, BadFlagsAndValues) {
  expect_clean_error(run_cli("generate -m " + kStories + " -p hi --no-such-flag"), "no-such-flag");
  expect_clean_error(run_cli("generate -m " + kStories + " -p hi --temp -1"), "--temp");
  expect_clean_error(run_cli("generate -m " + kStories + " -p hi --kv-type q2"), "--kv-type must be one of f16, bf16, f32, q8_0, q4_0, kivi2, got 'q2'");
  expect_clean_error(run_cli("generate -m " + kStories), "exactly one of -p TEXT or -f FILE");
  expect_clean_error(run_cli("generate -m " + kStories + " -f /nonexistent.txt"), "cannot read prompt file");
  expect_clean_error(run_cli("bench -m " + kStories + " --ctx 12,abc"), "--ctx expects");
  expect_clean_error(run_cli("nosuchcommand"), "unknown command 'nosuchcommand'");
  expect_clean_error(run_cli("bench -m " + kStories + " --ctx 64 --ratio 0.5 --press nosuch"), "unknown press 'nosuch'");
  expect_clean_error(run_cli("bench -m " + kStories + " --ctx 64 --ratio 1.5"), "--ratio expects");
}

// Defects found by trying the CLI as a new user (regression tests).
TEST(CliErrors, ThreadCountHasARange) {
  for (const std::string& cmd : {"generate -m " + kStories + " -p hi -n 1", "eval kld -m " + kStories + " --lengths 32 -o " +
                                     test_paths::scratch_dir() + "/threads_eval" + test_paths::process_tag()})
    for (const char* n : {"100000", "-1"})
      expect_clean_error(run_cli(cmd + " --threads " + n), "threads must be between 0 (one per core) and 1024");
}

TEST(CliErrors, WholePromptPressesWithExtraPassesGenerate) {
  // kvzip and kvcompose run extra passes over the context; the first token still comes from it.
  for (const std::string press : {"kvzip", "kvcompose"}) {
    const CliResult r = run_cli("generate -m " + kStories + " -p 'Once upon a time there was a girl' --press " + press +
                                " --ratio 0.5 -n 4 --json");
    ASSERT_EQ(r.status, 0) << press << ": " << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j.at("output_tokens").size(), 4u) << press;
    EXPECT_EQ(j.at("stop_reason"), "max_tokens") << press;
  }
}

TEST(CliErrors, FullContextIsReported) {
  const CliResult r = run_cli("generate -m " + kStories + " -p 'Once upon a time' --ctx-size 8 -n 100 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("the context of 8 positions is full (raise --ctx-size"), std::string::npos) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("stop_reason"), "context_full");
  // The cache holds all 8 positions; the last token is sampled from position 7's logits.
  EXPECT_EQ(j.at("prompt_tokens").size() + j.at("output_tokens").size(), 9u);
  // Stopping at -n is not a full context.
  const CliResult fits = run_cli("generate -m " + kStories + " -p 'Once upon a time' --ctx-size 64 -n 4 --json");
  ASSERT_EQ(fits.status, 0) << fits.err;
  EXPECT_EQ(fits.err.find("is full"), std::string::npos) << fits.err;
}
