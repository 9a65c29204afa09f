#pragma once
// One evaluation from settings to results, as the CLI's `eval` command and Python's
// kvsqueeze.evaluate run it: the samples of the task family (NIAH, RULER, LongBench, or the
// windows of a text for KL divergence / perplexity) built from `tasks`, then the grid of
// settings.presses x settings.ratios run over them, one result per cell appended to
// settings.out_dir/results.jsonl (cells already there are skipped: resume).
#include <cstdint>
#include <string>
#include <vector>

#include "kvsqueeze/eval/runner.h"

namespace kvsqueeze::eval {

// What the samples are; an empty list or 0 takes the kind's default.
struct TaskOptions {
  std::vector<int64_t> lengths;      // niah {1024, 2048, 4096}; ruler {4096}; kld/ppl {1024}
  std::vector<double> depths;        // niah, percent
  std::string variant = "single";    // niah: single | multi | passkey
  int64_t needles = 3;               // niah multi
  std::string haystack_dir;          // niah, ruler ("": the built-in haystack)
  std::vector<std::string> tasks;    // ruler (default: every task its inputs allow)
  std::string qa_file;               // ruler qa_1 / qa_2
  int64_t samples = 0;               // ruler: per task (10); kld/ppl: windows per length (3)
  std::string longbench_dir;         // longbench: the official JSONL files
  std::vector<std::string> datasets; // longbench (default: all)
  int64_t limit = 0, max_length = 0; // longbench: first N per dataset; prompt tokens
  std::string text_file;             // kld/ppl ("": the built-in haystack)
  int64_t continuation = 256;        // kld/ppl: teacher-forced tokens after each context
  std::string windows = "seeded";    // kld/ppl: seeded | consecutive
};

// Runs settings.kind (niah, ruler, longbench, kld, ppl) and returns the number of results appended.
// Bad settings throw kvsqueeze::Error (ParameterError naming the field) before the model loads.
int64_t evaluate(const EvalSettings& settings, const TaskOptions& tasks);

}  // namespace kvsqueeze::eval
