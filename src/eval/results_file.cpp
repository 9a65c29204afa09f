#include "eval/results_file.h"

#include <filesystem>

#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/report.h"

namespace kvsqueeze::eval {

ResultsFile::ResultsFile(const std::string& out_dir, nlohmann::json config, bool resume)
    : path_((std::filesystem::path(out_dir) / "results.jsonl").string()), config_(std::move(config)) {
  if (out_dir.empty()) throw Error("an output folder is needed: -o DIR");
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec || !std::filesystem::is_directory(out_dir)) throw Error("cannot create the output folder '" + out_dir + "'");
  const auto earlier = read_results(path_);
  if (!earlier.empty() && !resume)
    throw Error(path_ + " already holds " + std::to_string(earlier.size()) + " results; remove it or `resume`");
  for (const auto& r : earlier) {
    const auto& c = r.value("config", nlohmann::json::object());
    if (c.value("model_sha", "") != config_.value("model_sha", ""))
      throw Error(path_ + " holds results of another model (" + c.value("model", std::string("?")) + "); use another -o folder");
    done_.insert(r.value("key", ""));
  }
}

nlohmann::json ResultsFile::base(const std::string& kind, const std::string& key, const GridCell& cell) const {
  return {{"kind", kind},
          {"key", key},
          {"press", cell.press},
          {"ratio", cell.press == "none" ? 0.0 : cell.ratio},
          {"press_opts", cell.options},
          {"config", config_}};
}

void ResultsFile::append(const nlohmann::json& result) {
  append_result(path_, result);
  done_.insert(result.value("key", ""));
}

void fill_measurements(nlohmann::json& j, const InstalledCell& ic, double decode_ms) {
  j["kv_bytes_held"] = ic.kv_bytes_held;
  j["kv_bytes_full"] = ic.kv_bytes_full;
  j["achieved_ratio"] = ic.achieved_ratio;
  j["context_tokens"] = ic.context_tokens;
  j["shared_prefill"] = ic.shared_prefill;
  if (ic.own_budget) j["own_budget"] = true;
  j["timings"] = {{"prefill_ms", ic.prefill_ms}, {"compress_ms", ic.compress_ms}, {"decode_ms", decode_ms}};
}

}  // namespace kvsqueeze::eval
