// The KV cache type flags on the command line (llama.cpp's -ctk/-ctv, --kv-type, --kv-rotation,
// --kv-centering): a quantized cache generates and holds the bytes its blocks take; bad values
// and shapes a type cannot hold end in one line naming the flag.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "fixture_models.h"

namespace {

std::string stories_generate() { return "generate -m " + test_paths::stories260k() + " -p 'Once upon a time' -n 2 -t 1"; }

}  // namespace

TEST(KvTypeCli, BadValuesAndShapesNameTheFlag) {
  expect_one_line_error(stories_generate() + " --kv-type q5_1", {"--kv-type must be one of f16, bf16, f32, q8_0, q4_0, kivi2, got 'q5_1'"});
  expect_one_line_error(stories_generate() + " -ctk int8", {"--cache-type-k must be one of", "got 'int8'"});
  expect_one_line_error(stories_generate() + " --cache-type-v f8", {"--cache-type-v must be one of"});
  // stories260K's heads have 8 channels: not a whole block of 32.
  expect_one_line_error(stories_generate() + " -ctk q8_0", {"--cache-type-k q8_0 stores blocks of 32 elements", "have 8"});
  expect_one_line_error(stories_generate() + " -ctv q4_0", {"--cache-type-v q4_0 stores blocks of 32"});
  expect_one_line_error(stories_generate() + " --kv-rotation maybe", {"--kv-rotation must be auto, on or off, got 'maybe'"});
  expect_one_line_error(stories_generate() + " --kv-centering 1", {"--kv-centering must be auto, on or off"});
  expect_one_line_error("eval niah -m " + test_paths::stories260k() + " --reference-kv-type f16 --lengths 64 -o /tmp/kvsq-niah-x",
                        {"--reference-kv-type belongs to kld and ppl"});
}

TEST(KvTypeCli, QuantizedCachesGenerateAndHoldTheirBlocks) {
  std::string why;
  const std::string model = fixture_models::test_model_path("synth_qwen2_f32", &why);
  if (model.empty()) GTEST_SKIP() << why;
  const std::string base = "generate -m " + model + " -p 'a b c d e f g h i j k l m n o p' -n 4 -t 1 --json";
  const auto held = [&](const std::string& flags, const std::string& want_label) {
    const CliResult r = run_cli(base + " " + flags);
    EXPECT_EQ(r.status, 0) << flags << ": " << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j.at("kv_type"), want_label) << flags;
    return j.at("kv_bytes_held").get<double>();
  };
  const double f16 = held("", "f16"), q8 = held("--kv-type q8_0", "q8_0"), q4 = held("-ctk q4_0 -ctv q4_0 --kv-rotation off", "q4_0"),
               mixed = held("-ctk q8_0 -ctv q4_0", "q8_0/q4_0"), keys_only = held("--cache-type-k q8_0", "q8_0/f16");
  // Per slot and head of 64 channels: f16 2 x 128 + 4 bytes, q8_0 2 x 68 + 4, q4_0 2 x 36 + 4,
  // q8_0/q4_0 68 + 36 + 4, q8_0/f16 68 + 128 + 4 (the same slots in each run).
  EXPECT_DOUBLE_EQ(q8 / f16, 140.0 / 260.0);
  EXPECT_DOUBLE_EQ(q4 / f16, 76.0 / 260.0);
  EXPECT_DOUBLE_EQ(mixed / f16, 108.0 / 260.0);
  EXPECT_DOUBLE_EQ(keys_only / f16, 200.0 / 260.0);
}
