#pragma once
// The results.jsonl of an output folder, open for resuming: the keys already done, a check that
// earlier results came from the same model, and appends. Internal to the evaluation runner.
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "eval/cell_contexts.h"
#include "kvsqueeze/eval/runner.h"

namespace kvsqueeze::eval {

class ResultsFile {
 public:
  // Creates the folder. With resume, reads what is there (results of another model are an
  // error); without, an existing non-empty results.jsonl is an error.
  ResultsFile(const std::string& out_dir, nlohmann::json config, bool resume);
  bool has(const std::string& key) const { return done_.count(key) > 0; }
  // The fields every result has: kind, key, press, ratio, options, config.
  nlohmann::json base(const std::string& kind, const std::string& key, const GridCell& cell) const;
  void append(const nlohmann::json& result);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  nlohmann::json config_;
  std::set<std::string> done_;
};

// kv_bytes_held/full, achieved ratio, context tokens, timings and shared_prefill of a cell.
void fill_measurements(nlohmann::json& result, const InstalledCell& cell, double decode_ms);

}  // namespace kvsqueeze::eval
