#pragma once
// kvsqueeze bench --press-time: what scoring and compaction cost on top of a prefill.
#include <cstdint>
#include <string>
#include <vector>

#include "kvsqueeze/session.h"
#include "kvsqueeze/model.h"

namespace kvsqueeze::cli {

struct PressTimeArgs {
  std::string model_path;
  std::string presses;      // top-level comma-separated press expressions
  std::vector<std::string> press_opts;
  std::string prompt_file;  // text repeated up to ctx tokens; empty: the built-in text
  bool random_ids = false;  // uniform random token ids instead of text
  std::string dump_ids;     // write the token ids here (JSON), for the kvpress comparison
  SessionOptions kv;  // only the cache types and transforms are used
  int64_t ctx = 8192, chunk = 512;
  int threads = 0;
  int repeat = 1;
  uint64_t seed = 42;
  double ratio = 0.5;
  double wait_idle_s = 0;          // before each run, wait up to this long for an idle machine
  double max_foreign_load = 0.25;  // "idle": other processes use fewer cores than this
  bool json = false;
};

// Splits "a,b(c,d),e" at the commas outside parentheses.
std::vector<std::string> split_press_list(const std::string& text);

int run_press_time(const PressTimeArgs& a, const Model& model);

}  // namespace kvsqueeze::cli
