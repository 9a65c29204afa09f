#pragma once
// The head-score file format (docs/METHODS.md §5.4), its one home: the reader the head allocators
// (headkv, dililazykv) use and the writer `profile-heads` uses.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "kvsqueeze/model.h"

namespace kvsqueeze::head_budget {

// The "layer-head" key of a query head's scores ("3-7": layer 3, query head 7).
std::string head_score_key(int64_t layer, int64_t head);
// Writes a head-score document (as profile-heads builds it) to `path` as indented JSON; throws
// kvsqueeze::Error naming the file when it cannot be written.
void write_head_scores(const nlohmann::json& scores, const std::string& path);

// {"layer-head": [numbers] | number, ..., "_meta": {...}}: query-head scores (the mean of each
// list), keys starting with "_" skipped.
struct HeadScoreFile {
  std::string path;
  std::map<std::pair<int64_t, int64_t>, double> scores;  // (layer, query head) -> mean score
  std::string meta_model;                                // _meta.model, "" if none
  std::string meta_sha;                                  // _meta.model_sha, "" if none
  bool has_meta = false;
};
// Reads and validates the syntax (missing file, malformed JSON, a bad key or value: one clear
// kvsqueeze::Error naming the file and what is wrong).
// `metric` non-empty: the scores of _all[metric] (every metric a kvsqueeze profile-heads file
// holds) instead of the top-level "layer-head" lists.
HeadScoreFile read_head_scores(const std::string& path, const std::string& metric = "");
// Checks that the file was made for `model`: _meta.model names it (compared lowercased, letters
// and digits only, with general.name, the file name or its stem) or _meta.model_sha is its
// fingerprint; warns on stderr when there is no _meta.
void check_model(const HeadScoreFile& file, const Model& model);
// Each KV head's score, [layer][KV head]: the mean of its G = n_head / n_head_kv query heads'
// (query head q belongs to KV head q / G). The file must hold exactly n_layer x n_head keys.
std::vector<std::vector<double>> kv_head_scores(const HeadScoreFile& file, int64_t n_layer, int64_t n_head, int64_t n_head_kv);

}  // namespace kvsqueeze::head_budget
