#pragma once
// Head-importance profiling (docs/METHODS.md §5): needle-in-a-haystack runs whose attention rows
// score every query head by how it attends to the needle: DiliScore (weighted precision),
// LazyScore (weighted recall), their harmonic mean InfScore (DiliLazyKV), the four attention
// categories, and HeadKV's retrieval score (copying the needle token by token). Only runs whose
// greedy answer passes the gate count. The result is a JSON file keyed "layer-head" that the
// head-budget allocators read.
//
// File layout (every list holds one value per ACCEPTED run, in run order):
//   "L-H"        the chosen metric (--metric) of layer L, query head H (0-based, row-major)
//   "_meta"      {model, model_sha, metric, top_k, gate {...}, lengths, depths (percent),
//                 needles [...], decode_steps, max_new_tokens, chat, runs, accepted, rejected,
//                 n_layer, n_head, n_head_kv, metrics (the names under _all), version}
//   "_all"       {metric name: {"L-H": [...]}} for every metric (the chosen one included):
//                 infscore, precision, recall, retrieval, retrieval_reasoning, and the four
//                 category counts diligent, subconscious, distracted, diffuse_peripheral
//   "_kv_heads"  the same per KV head ("L-K"): each run's mean over the KV head's G query heads
//   "_runs"      [{length, depth, needle, prompt_tokens, needle_span [begin, end), answer (the
//                 greedy answer up to its first line break),
//                 gate_score, accepted}] for every run, accepted or not
// Readers skip keys beginning with "_" (as HeadKV's allocator expects plain "L-H" keys).
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvsqueeze/model.h"
#include "kvsqueeze/session.h"
#include "kvsqueeze/tokenizer.h"

namespace kvsqueeze::profile {

struct Needle {
  std::string needle;    // inserted into the haystack
  std::string question;  // asked after the context
  std::string answer;    // the reference the gate compares the greedy answer with
};
// The three built-in needles (§5.1): campus / relax, Ph.D. habits, Tom born 2005 -> 2020.
std::vector<Needle> default_needles();
// JSONL, one {"needle", "question", "answer"} object (non-empty strings) per line; blank lines
// skipped. Throws kvsqueeze::Error naming the file and line for anything else, or an empty file.
std::vector<Needle> read_needles(const std::string& path);

// Head metrics of one attention row (§5.2). `row` holds the attention of one query head over
// every visible position (0 where the head does not see a position, e.g. outside a sliding
// window); the needle is positions [needle_begin, needle_end). TopK: the top_k largest entries
// (ties to the later position, §0).
struct RowMetrics {
  double wtp = 0, wfp = 0, wfn = 0;  // weighted true positives, false positives, false negatives
  double precision = 0;              // DiliScore = WTP / (WTP + WFP)   (0 when both are 0)
  double recall = 0;                 // LazyScore = WTP / (WTP + WFN)   (0 when both are 0)
  double infscore = 0;               // 2PR / (P + R)                   (0 when both are 0)
  // Category counts (positions): diligent = |TopK ∩ N|, subconscious = |N \ TopK|,
  // distracted = |TopK \ N|, diffuse peripheral = everything else. They sum to the row length.
  int64_t diligent = 0, subconscious = 0, distracted = 0, diffuse_peripheral = 0;
};
RowMetrics row_metrics(const std::vector<float>& row, int64_t needle_begin, int64_t needle_end, int64_t top_k);
// The positions of the k largest entries, largest first, ties to the later position.
std::vector<int64_t> top_positions(const std::vector<float>& row, int64_t k);

// HeadKV's retrieval score for one decoding step (Wu et al.'s retrieval heads, as HeadKV's
// retrieval_calculate): 1/|N| when the head's most-attended position lies in the needle and the
// prompt token there equals the token generated at this step (a copy), else 0. A run's score is
// the sum over its answer's steps.
double retrieval_step(const std::vector<float>& row, int64_t needle_begin, int64_t needle_end,
                      const std::vector<int32_t>& prompt_ids, int32_t generated);
// HeadKV-R2's retrieval-reasoning score for one step (retrieval_head_detection_r2.py): over the
// |N| most-attended positions, the attention that falls in the needle, times 10 / (|N| x
// answer_tokens) where answer_tokens is the reference answer's length in tokens. A run sums
// the first answer_tokens steps (R2 stops decoding there).
double retrieval_reasoning_step(const std::vector<float>& row, int64_t needle_begin, int64_t needle_end,
                                int64_t answer_tokens);

// The tokens [begin, end) whose text overlaps the first occurrence of `needle` in the text the
// ids decode to (special tokens rendered). Throws kvsqueeze::Error when the needle text is not
// there (a tokenizer that does not round-trip it).
struct TokenSpan {
  int64_t begin = 0, end = 0;
};
TokenSpan locate_needle(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, const std::string& needle);

// The gate that decides whether a run counts (§5.3): "f1" (LongBench token F1 after
// normalisation, the default), "rouge" (ROUGE-L F) or "none" (every run counts).
double gate_score(const std::string& gate, const std::string& answer, const std::string& reference);
std::vector<std::string> gate_names();
std::vector<std::string> metric_names();  // infscore, precision, recall, retrieval, retrieval_reasoning

// One needle-in-a-haystack prompt (§5.1): the haystack cut to (length - 200 - needle tokens)
// tokens, the needle inserted at `depth_percent` of them, moved back to the sentence end before
// that point; then the instruction to answer from the book, the question and "Answer:" (in the
// model's chat template when `chat`).
struct ProfilePrompt {
  std::vector<int32_t> ids;  // the final prompt tokens
  TokenSpan needle;          // located in `ids`
  std::string context;       // the haystack with the needle (for inspection)
};
// The haystack's tokens (no BOS), the text repeated until there are at least min_tokens.
std::vector<int32_t> haystack_tokens(const Tokenizer& tokenizer, const std::string& haystack, int64_t min_tokens);
// Throws kvsqueeze::Error when the needle does not fit (length - 200 <= its tokens) or the
// haystack is too short for the length.
ProfilePrompt build_prompt(const Model& model, const std::vector<int32_t>& haystack_ids, int64_t length,
                           double depth_percent, const Needle& needle, bool chat);

struct ProfileOptions {
  std::vector<int64_t> lengths = {2048};
  std::vector<double> depths;  // percent in [0, 100]; empty: 2, 5, ..., 98 (DiliLazyKV's default)
  std::vector<Needle> needles; // empty: default_needles()
  std::string haystack_dir;    // "" = the shipped public-domain haystack
  std::string metric = "infscore";
  int64_t top_k = 10;
  std::string gate = "f1";
  double gate_threshold = 0.5;  // a run counts when gate_score >= this
  int64_t decode_steps = 0;     // rows of this many generated tokens join the last prompt token's
  int64_t max_new_tokens = 100;
  bool chat = true;
  SessionOptions session;       // ctx_size 0: just enough for the longest prompt and its answer
  bool progress = true;         // a progress bar on stderr
  // A JSONL file of finished runs, so that an interrupted profile resumes: runs found there (same
  // model, prompt and settings) are not run again, each new run is appended as it finishes. "": none.
  std::string checkpoint;
};
std::vector<double> default_depths();
// Checks every option (and reads the needles and haystack); throws kvsqueeze::Error naming the bad one.
void validate(const ProfileOptions& options);

// Runs every (length, depth, needle) and returns the JSON described above. Throws
// kvsqueeze::Error when no run passes the gate (nothing to write).
nlohmann::json profile_heads(const Model& model, const ProfileOptions& options);

// Writes `profile` to `path` atomically (a temporary file renamed into place) and, next to it,
// a layer x head heat map of the mean chosen metric x100 (PATH without ".json" + ".png"/".svg").
// Returns the files written.
std::vector<std::string> write_head_profile(const nlohmann::json& profile, const std::string& path);

}  // namespace kvsqueeze::profile
