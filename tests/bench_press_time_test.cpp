// kvsqueeze bench --press-time on stories260K: the JSON it prints, the ids it dumps, its errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli_runner.h"

namespace {

const std::string kStories = test_paths::stories260k();

}  // namespace

TEST(BenchPressTime, JsonAndDumpedIds) {
  const std::string ids_path = test_paths::scratch_dir() + "/press_time_ids" + test_paths::process_tag() + ".json";
  const CliResult r = run_cli("bench -m " + kStories + " --ctx 96 --ratio 0.25 --press 'knorm, snapkv(window_size=8)' --press-time -t 1 " +
                              "--repeat 2 --json --dump-ids " + ids_path);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ctx"], 96);
  EXPECT_EQ(j["ratio"], 0.25);
  EXPECT_EQ(j["compressible_layers"], 5);  // stories260K: 5 layers, none sliding
  ASSERT_EQ(j["results"].size(), 2u);
  EXPECT_EQ(j["results"][0]["press"], "knorm");
  EXPECT_EQ(j["results"][1]["press"], "snapkv(window_size=8)");
  for (const auto& p : j["results"]) {
    EXPECT_EQ(p["layers_compressed"], 5);
    EXPECT_EQ(p["samples"].size(), 2u);
    EXPECT_GT(p["prefill_ms"].get<double>(), 0.0);
    EXPECT_GT(p["press_prefill_ms"].get<double>(), 0.0);
    EXPECT_GE(p["press_calls_ms"].get<double>(), 0.0);
    EXPECT_LE(p["press_calls_ms"].get<double>(), p["press_prefill_ms"].get<double>());
    // 96 slots per head, int(96 * 0.75) = 72 kept in every layer: positions, K and V shrink alike.
    EXPECT_NEAR(p["kv_bytes_held_press"].get<double>() / p["kv_bytes_held_prefill"].get<double>(), 0.75, 1e-9);
  }
  const auto ids = nlohmann::json::parse(slurp(ids_path));
  ASSERT_EQ(ids["ids"].size(), 96u);
  EXPECT_EQ(ids["ids"][0], 1);  // BOS
  // The same ids on every run (the kvpress comparison relies on it).
  const CliResult again = run_cli("bench -m " + kStories + " --ctx 96 --press knorm --press-time -t 1 --json --dump-ids " + ids_path);
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_EQ(nlohmann::json::parse(slurp(ids_path))["ids"], ids["ids"]);
}

TEST(BenchPressTime, Errors) {
  auto expect_error = [](const CliResult& r, const std::string& needle) {
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  };
  expect_error(run_cli("bench -m " + kStories + " --ctx 64,128 --press-time"), "one --ctx");
  expect_error(run_cli("bench -m " + kStories + " --ctx 64 --ratio 0.2,0.5 --press-time"), "one --ratio");
  expect_error(run_cli("bench -m " + kStories + " --ctx 64 --repeat 2"), "belong to --press-time");
  expect_error(run_cli("bench -m " + kStories + " --ctx 64 --press knorm,,tova --press-time"), "comma-separated press expressions");
  expect_error(run_cli("bench -m " + kStories + " --ctx 64 --press knorm,nosuch --press-time"), "unknown press 'nosuch'");
}
