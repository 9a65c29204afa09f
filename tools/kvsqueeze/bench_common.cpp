#include "bench_common.h"

#include <chrono>
#include <fstream>
#include <sstream>

#include "kvsqueeze/error.h"
#include "kvsqueeze/model.h"

namespace kvsqueeze::cli {

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& flag) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v <= 0) throw Error(flag + " expects a comma-separated list of positive integers, got '" + text + "'");
    out.push_back(v);
  }
  if (out.empty()) throw Error(flag + " is empty");
  return out;
}

std::vector<double> parse_ratio_list(const std::string& text, const std::string& flag) {
  std::vector<double> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    double v = -1;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || !(v >= 0.0 && v < 1.0))
      throw Error(flag + " expects comma-separated ratios in [0, 1) (the fraction removed), got '" + text + "'");
    out.push_back(v);
  }
  if (out.empty()) throw Error(flag + " is empty");
  return out;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double ms_since_steady(int64_t start_ns) { return static_cast<double>(now_ns() - start_ns) / 1e6; }

size_t current_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return static_cast<size_t>(std::stoull(line.substr(6))) * 1024;
  return 0;
}

size_t weight_bytes_per_token(const Model& model) {
  size_t total = 0;
  for (const auto& t : model.gguf().tensors()) {
    if (t.name != "token_embd.weight") {
      total += t.n_bytes;
      continue;
    }
    total += t.n_rows() > 0 ? t.n_bytes / static_cast<size_t>(t.n_rows()) : 0;  // the token's row
    if (model.config().tied_embeddings) total += t.n_bytes;                     // and the LM head
  }
  return total;
}

}  // namespace kvsqueeze::cli
