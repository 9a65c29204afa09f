#pragma once
// Writes head-score files (docs/METHODS.md §5.4) for tests: deterministic per-run lists keyed
// "layer-head" over n_layer x n_head query heads, and a _meta naming `model` (none if empty).
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "test_paths.h"

namespace test_head_scores {

inline std::string write_json(const std::string& tag, const nlohmann::json& j) {
  const std::string path = test_paths::scratch_dir() + "/head-scores-" + tag + test_paths::process_tag() + ".json";
  std::ofstream(path) << j.dump();
  return path;
}

inline nlohmann::json make(int64_t n_layer, int64_t n_head, const std::string& model) {
  nlohmann::json j = nlohmann::json::object();
  if (!model.empty()) j["_meta"] = {{"model", model}, {"metric", "infscore"}};
  for (int64_t l = 0; l < n_layer; ++l)
    for (int64_t h = 0; h < n_head; ++h) {
      const auto i = static_cast<int>(l * n_head + h);
      const double a = static_cast<double>((i * 37) % 23) / 23.0, b = static_cast<double>((i * 11) % 7) / 7.0;
      if (i % 5 == 0) j[std::to_string(l) + "-" + std::to_string(h)] = a;
      else j[std::to_string(l) + "-" + std::to_string(h)] = {a, b, a * b};
    }
  return j;
}

inline std::string write(const std::string& tag, int64_t n_layer, int64_t n_head, const std::string& model) {
  return write_json(tag, make(n_layer, n_head, model));
}

}  // namespace test_head_scores
