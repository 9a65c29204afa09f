#pragma once
// Runs the real kvsqueeze binary and captures its exit status, stdout and stderr.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_paths.h"

struct CliResult {
  int status = -1;
  std::string out, err;
  int err_lines() const {
    int n = 0;
    for (char c : err) n += c == '\n';
    return n;
  }
};

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `binary args` (a program built by this project).
inline CliResult run_program(const std::string& binary, const std::string& args) {
  const std::string tag = test_paths::process_tag();  // ctest runs test processes side by side
  const std::string out = test_paths::scratch_dir() + "/cli" + tag + ".out", err = test_paths::scratch_dir() + "/cli" + tag + ".err";
  const std::string cmd = binary + " " + args + " > " + out + " 2> " + err + " < /dev/null";
  CliResult r;
  const int raw = std::system(cmd.c_str());
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

inline CliResult run_cli(const std::string& args) { return run_program(test_paths::cli(), args); }

// `kvsqueeze args` must fail as bad input does: a non-zero exit (not a signal), exactly one line
// on stderr starting "kvsqueeze: error: " and holding every needle, nothing on stdout.
inline void expect_one_line_error(const std::string& args, const std::vector<std::string>& needles) {
  SCOPED_TRACE(args);
  const CliResult r = run_cli(args);
  EXPECT_NE(r.status, 0);
  EXPECT_LT(r.status, 128) << "killed by a signal: " << r.err;
  EXPECT_EQ(r.err_lines(), 1) << r.err;
  EXPECT_EQ(r.err.rfind("kvsqueeze: error: ", 0), 0u) << r.err;
  for (const auto& needle : needles) EXPECT_NE(r.err.find(needle), std::string::npos) << "want '" << needle << "' in: " << r.err;
  EXPECT_TRUE(r.out.empty()) << "stdout: " << r.out;
}
