#pragma once
// Runs an evaluation grid (presses x ratios) over samples and appends one result per cell to
// OUT/results.jsonl (schema in report.h), skipping cells already there (resume).
//
// Prefill-time cells share one prefill per sample (shared_prefill.h): the context is evaluated
// once, every cell compresses its own copy. Cells that cannot share it get their own prefill:
// chunked-prefill compression (--compress-chunks), decoding-time compression (--decode-*),
// query-aware compression (finch) and presses that compress between chunks on their own trigger
// (lagkv mode=lagkv). The uncompressed baseline ("none") is always part of the grid.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvsqueeze/eval/sample.h"
#include "kvsqueeze/model.h"
#include "kvsqueeze/press_pipeline.h"
#include "kvsqueeze/session.h"

namespace kvsqueeze::eval {

struct EvalSettings {
  std::string kind;                     // niah | ruler | longbench | kld | ppl
  std::string model_path;
  std::vector<std::string> presses;     // press expressions ("none" is added anyway)
  std::vector<double> ratios;           // fraction removed, each in [0, 1)
  std::vector<std::string> press_opts;  // NAME.KEY=V (to presses naming NAME), KEY=V (one press only), budget=, budget_bytes=
  CompressionPolicy policy;             // chunked-prefill and decoding-time compression
  bool query_aware = false;
  bool chat = true;                     // wrap context + question in the model's chat template
  SessionOptions session;
  // kld/ppl: the reference distributions come from an uncompressed cache of these types instead
  // of the session's own (a quantized cache measured against f16); unset: the session's.
  std::optional<KvType> reference_kv_type;
  uint64_t seed = 42;
  std::string out_dir;
  bool resume = true;                   // false: an existing results.jsonl is an error
  // The compressed copies one shared prefill keeps at once; more cells take more prefills.
  int64_t grid_memory_mib = 4096;
};

// One grid cell: a press expression and a ratio, with the options that apply to it.
struct GridCell {
  std::string press;  // "none" for the baseline
  double ratio = 0.0;
  std::vector<std::string> options;
  std::string label() const;  // "snapkv@0.5"
};
// The baseline first, then presses x ratios; checks every expression and option up front
// (unknown press or option: kvsqueeze::Error before anything runs).
std::vector<GridCell> make_grid(const EvalSettings& settings);
// The resume key of a sample in a cell (with the decode policy and query-awareness).
std::string result_key(const Sample& sample, const GridCell& cell, const EvalSettings& settings);
// What every result records about the run (model hash, chunk, kv type, seed, ...).
nlohmann::json run_config(const Model& model, const EvalSettings& settings);

// Generation tasks (niah, ruler, longbench): greedy answers scored with each sample's metric.
// Returns the number of results appended.
int64_t run_generation_eval(const Model& model, const std::vector<Sample>& samples, const EvalSettings& settings);

// KL divergence and perplexity (docs/METHODS.md §8.4): a context and a continuation teacher-forced
// after it, once with the full cache and once per cell with the compressed one.
struct KldText {
  std::string id;
  std::vector<int32_t> context, continuation;
  nlohmann::json meta = nlohmann::json::object();
};
// Windows of `text` (tokenized whole): `per_length` windows of context `length` + `continuation`
// tokens for each length, at seeded offsets, or (consecutive) the text's first chunks of that
// many tokens, as llama.cpp's llama-perplexity cuts them. Throws when the text is too short.
std::vector<KldText> kld_windows(const Model& model, const std::string& text, const std::vector<int64_t>& lengths,
                                 int64_t continuation, int64_t per_length, uint64_t seed, bool consecutive = false);
int64_t run_kld_eval(const Model& model, const std::vector<KldText>& texts, const EvalSettings& settings);

// Per-token comparison of two next-token distributions given as logits (n_vocab each).
struct TokenDivergence {
  double kl = 0.0;          // KL(P_ref || P_test) in nats
  double abs_dlogp = 0.0;   // |log p_ref(target) - log p_test(target)|
  bool top1_agree = false;  // same argmax
  double nll_ref = 0.0, nll_test = 0.0;  // -log p(target)
};
TokenDivergence token_divergence(const float* ref_logits, const float* test_logits, int64_t n_vocab, int32_t target);
// The same with the reference's log-sum-exp computed once (it serves every cell).
TokenDivergence token_divergence(const float* ref_logits, double ref_lse, const float* test_logits, int64_t n_vocab, int32_t target);

}  // namespace kvsqueeze::eval
