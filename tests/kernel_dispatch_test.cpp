// Run-time choice of the kernel variant: what kvsqueeze::kernels_isa() and the CLI report, the
// KVSQ_ISA override end to end (every variant this CPU runs gives the same greedy tokens as the
// default one), and bad KVSQ_ISA values (one stderr line, the best variant, no failure).
#include <gtest/gtest.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_runner.h"
#include "kernels/dispatch.h"
#include "kvsqueeze/kernels_isa.h"

using namespace kvsqueeze;

namespace {

std::string best_label() {
  for (auto isa : {kernels::Isa::Amx, kernels::Isa::Avx512, kernels::Isa::Avx2})
    if (kernels::isa_runs(isa)) return kernels::isa_label(isa);
  return "scalar";
}

// The CLI with KVSQ_ISA set to `isa` (unset when empty).
CliResult run_with_isa(const std::string& isa, const std::string& args) {
  const std::string env = isa.empty() ? "env -u KVSQ_ISA " : "env KVSQ_ISA=" + isa + " ";
  return run_program(env + test_paths::cli(), args);
}

nlohmann::json json_of(const CliResult& r) {
  EXPECT_EQ(r.status, 0) << r.err;
  return r.status == 0 ? nlohmann::json::parse(r.out) : nlohmann::json::object();
}

}  // namespace

TEST(KernelDispatch, ReportsTheBestVariantThisCpuRuns) {
  if (std::getenv("KVSQ_ISA")) GTEST_SKIP() << "KVSQ_ISA is set in the test environment";
  EXPECT_EQ(kernels_isa(), best_label());
  EXPECT_TRUE(kernels::isa_runs(kernels::Isa::Scalar));
  const auto r = run_with_isa("", "inspect " + test_paths::stories260k());
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("kernels       " + best_label()), std::string::npos) << r.out;
  EXPECT_EQ(json_of(run_with_isa("", "inspect --json " + test_paths::stories260k()))["kernels"], best_label());
}

TEST(KernelDispatch, EveryVariantGeneratesTheSameGreedyTokens) {
  // Plain generation, and a press that reads cached rows (kv_rows.h) and attention statistics.
  for (const std::string extra : {"", " --press kvzip --ratio 0.5"}) {
    const std::string args = "generate -m " + test_paths::stories260k() +
                             " -p 'Once upon a time, there was a little' -n 24 --temp 0 --json" + extra;
    const auto base = json_of(run_with_isa("", args));
    ASSERT_EQ(base["kernels"], best_label());
    ASSERT_EQ(base["output_tokens"].size(), 24u) << base.dump();
    for (auto isa : kernels::kAllIsas) {
      if (!kernels::isa_runs(isa)) continue;  // the default run above already covers the best one
      const auto r = run_with_isa(kernels::isa_name(isa), args);
      EXPECT_TRUE(r.err.empty()) << r.err;
      const auto j = json_of(r);
      EXPECT_EQ(j["kernels"], kernels::isa_label(isa));
      EXPECT_EQ(j["output_tokens"], base["output_tokens"]) << "KVSQ_ISA=" << kernels::isa_name(isa) << extra;
    }
  }
}

TEST(KernelDispatch, UnknownOrUnsupportedIsaFallsBackWithOneLine) {
  const std::string args = "inspect --json " + test_paths::stories260k();
  auto r = run_with_isa("sse9", args);
  EXPECT_EQ(r.err_lines(), 1) << r.err;
  EXPECT_NE(r.err.find("KVSQ_ISA=sse9 is unknown (valid: scalar, avx2, avx512, amx); using " + best_label()), std::string::npos)
      << r.err;
  EXPECT_EQ(json_of(r)["kernels"], best_label());
  for (auto isa : kernels::kAllIsas) {
    if (kernels::isa_runs(isa)) continue;
    r = run_with_isa(kernels::isa_name(isa), args);
    EXPECT_EQ(r.err_lines(), 1) << r.err;
    EXPECT_NE(r.err.find(std::string("KVSQ_ISA=") + kernels::isa_name(isa) + ": "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("; using " + best_label()), std::string::npos) << r.err;
    EXPECT_EQ(json_of(r)["kernels"], best_label());
  }
}
