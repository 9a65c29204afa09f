#pragma once
// Runs the real kvsqueeze binary and captures its exit status, stdout and stderr.
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

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
