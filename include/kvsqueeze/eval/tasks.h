#pragma once
// Generators and loaders of evaluation samples. Everything is seeded and reproducible: the same
// options, seed and tokenizer give byte-identical samples. Lengths are in the model's own tokens.
#include <cstdint>
#include <string>
#include <vector>

#include "kvsqueeze/eval/sample.h"
#include "kvsqueeze/tokenizer.h"

namespace kvsqueeze::eval {

// The shipped public-domain haystack text (embedded in the binary at build time).
const std::string& default_haystack();
// The haystack: every *.txt file of `dir` in name order, joined; "" = default_haystack().
// Throws kvsqueeze::Error for a missing or empty directory.
std::string load_haystack(const std::string& dir);

// Needle in a haystack (kvpress style): haystack truncated so that the whole prompt has `length`
// tokens, the needle(s) inserted at `depth` percent (at a sentence boundary), scored per cell.
struct NiahOptions {
  std::vector<int64_t> lengths = {1024, 2048, 4096};
  std::vector<double> depths = {0, 25, 50, 75, 100};  // percent
  std::string variant = "single";  // single | multi (several needles, all asked) | passkey
  int64_t n_needles = 3;            // multi
  int64_t passkey_digits = 5;       // passkey (LagKV also tests 64)
  std::string haystack_dir;         // "" = the default haystack
  uint64_t seed = 42;
};
std::vector<Sample> niah_samples(const NiahOptions& options, const Tokenizer& tokenizer);

// RULER's synthetic tasks (NVIDIA/RULER synthetic.yaml) at `length` tokens.
struct RulerOptions {
  int64_t length = 4096;
  int64_t samples_per_task = 10;
  uint64_t seed = 42;
  std::string haystack_dir;  // essays for niah_single_2/3, multikey_1, multivalue, multiquery
  std::string qa_file;       // SQuAD-format (qa_1) or HotpotQA-format (qa_2) JSON; needed by qa_* only
};
std::vector<std::string> ruler_task_names();  // the 13 tasks
std::vector<Sample> ruler_samples(const std::string& task, const RulerOptions& options, const Tokenizer& tokenizer);

// LongBench from the official JSONL files (`folder`/DATASET.jsonl), with the official prompt
// template, generation length, metric and truncation (the middle of prompts over max_length tokens).
struct LongBenchOptions {
  std::string folder;
  int64_t max_length = 0;  // prompt tokens; 0: the session's context minus the generation length
  int64_t limit = 0;       // first N samples per dataset (0: all)
};
std::vector<std::string> longbench_dataset_names();
std::vector<Sample> longbench_samples(const std::string& dataset, const LongBenchOptions& options, const Tokenizer& tokenizer);

}  // namespace kvsqueeze::eval
