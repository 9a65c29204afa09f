// The read-bandwidth probe and the decode report of `kvsqueeze bench --bandwidth`: bytes per
// token are every tensor once but the embedding table (one row; the whole table again when it is
// the LM head), plus the K/V in use, and the bound is bandwidth / bytes.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "kvsqueeze/bandwidth.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/gguf.h"

using namespace kvsqueeze;

TEST(Bandwidth, ProbeReadsTheWholeBufferAndReportsARate) {
  const ReadBandwidth r = measure_read_bandwidth(size_t{8} << 20, 1, 2);
  EXPECT_EQ(r.bytes, size_t{8} << 20);
  EXPECT_EQ(r.threads, 1);
  EXPECT_EQ(r.passes, 2);
  EXPECT_GT(r.gb_per_s, 0.1);
  EXPECT_GT(measure_read_bandwidth(size_t{8} << 20, 2, 1).gb_per_s, 0.1);
  EXPECT_THROW(measure_read_bandwidth(1000, 1, 1), Error);
  EXPECT_THROW(measure_read_bandwidth(size_t{8} << 20, 1, 0), Error);
}

TEST(Bandwidth, BenchReportsBytesPerTokenAndTheBound) {
  const CliResult r = run_cli("bench -m " + test_paths::stories260k() + " --ctx 32,96 -n 4 -t 1 --bandwidth --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const double gbs = j["bandwidth"]["gb_per_s"].get<double>();
  EXPECT_GT(gbs, 0.1);
  EXPECT_EQ(j["bandwidth"]["threads"].get<int>(), 1);
  const auto file = GgufFile::open(test_paths::stories260k());
  size_t weights = 0;
  bool has_output = false;
  for (const auto& t : file->tensors()) has_output = has_output || t.name == "output.weight";
  for (const auto& t : file->tensors())
    weights += t.name != "token_embd.weight" ? t.n_bytes : t.n_bytes / static_cast<size_t>(t.n_rows()) + (has_output ? 0 : t.n_bytes);
  double last_kv = 0;
  for (const auto& row : j["results"]) {
    EXPECT_EQ(row["weight_bytes_per_token"].get<size_t>(), weights);
    const double kv = row["kv_bytes_per_token"].get<double>();
    EXPECT_GT(kv, last_kv);  // deeper context, more K/V read per token
    last_kv = kv;
    const double bound = gbs * 1e9 / (static_cast<double>(weights) + kv);
    EXPECT_NEAR(row["bound_tok_s"].get<double>(), bound, 1e-6 * bound);
    EXPECT_NEAR(row["pct_of_bound"].get<double>(), 100.0 * row["decode_tok_s"].get<double>() / bound, 1e-6);
  }
  const CliResult bad = run_cli("bench -m " + test_paths::stories260k() + " --ctx 32 --ratio 0.5 --bandwidth");
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.err.find("--bandwidth goes with the speed benchmark"), std::string::npos) << bad.err;
}
