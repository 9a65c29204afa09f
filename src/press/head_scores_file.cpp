#include "press/head_scores_file.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "kvsqueeze/error.h"

namespace kvsqueeze::head_budget {

std::string head_score_key(int64_t layer, int64_t head) { return std::to_string(layer) + "-" + std::to_string(head); }

void write_head_scores(const nlohmann::json& scores, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error("cannot write '" + path + "'");
  out << scores.dump(1) << "\n";
  out.flush();
  if (!out) throw Error("cannot write '" + path + "' (disk full?)");
}

namespace {

// numpy's pairwise summation of float64 (np.add.reduce, hence np.mean), for parity of the means.
double numpy_sum(const double* a, size_t n) {
  if (n < 8) {
    double s = 0.0;  // numpy starts from -0.0 and adds left to right; the same for finite values
    for (size_t i = 0; i < n; ++i) s += a[i];
    return s;
  }
  if (n <= 128) {
    double r[8];
    for (size_t j = 0; j < 8; ++j) r[j] = a[j];
    size_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (size_t j = 0; j < 8; ++j) r[j] += a[i + j];
    double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) s += a[i];
    return s;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return numpy_sum(a, n2) + numpy_sum(a + n2, n - n2);
}

[[noreturn]] void bad_file(const std::string& path, const std::string& what) {
  throw Error("head_scores file '" + path + "': " + what);
}

bool parse_index(const std::string& text, int64_t& out) {
  if (text.empty() || text.size() > 9) return false;
  for (char c : text)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  out = std::stoll(text);
  return true;
}

std::string normalized(const std::string& s) {
  std::string out;
  for (char c : s)
    if (std::isalnum(static_cast<unsigned char>(c))) out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

HeadScoreFile read_head_scores(const std::string& path, const std::string& metric) {
  HeadScoreFile f;
  f.path = path;
  std::ifstream in(path);
  if (!in) bad_file(path, "cannot be read (missing file?)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    bad_file(path, "not valid JSON (" + msg + ")");
  }
  if (!j.is_object()) bad_file(path, "must be a JSON object keyed \"layer-head\"");
  if (j.contains("_meta")) {
    const auto& meta = j["_meta"];
    f.has_meta = true;
    if (!meta.is_object()) bad_file(path, "\"_meta\" must be an object");
    if (meta.contains("model")) {
      if (!meta["model"].is_string()) bad_file(path, "\"_meta.model\" must be a string");
      f.meta_model = meta["model"].get<std::string>();
    }
    if (meta.contains("model_sha")) {
      if (!meta["model_sha"].is_string()) bad_file(path, "\"_meta.model_sha\" must be a string");
      f.meta_sha = meta["model_sha"].get<std::string>();
    }
  }
  // The scores: the top-level "layer-head" lists, or those of one metric of a profile's "_all".
  const nlohmann::json* scores = &j;
  if (!metric.empty()) {
    if (!j.contains("_all") || !j["_all"].is_object())
      bad_file(path, "has no \"_all\" object, so metric=" + metric + " cannot be read (omit metric to use its \"layer-head\" scores)");
    if (!j["_all"].contains(metric) || !j["_all"][metric].is_object()) {
      std::string names;
      for (const auto& [name, value] : j["_all"].items()) names += (names.empty() ? "" : ", ") + name;
      bad_file(path, "has no metric '" + metric + "' in \"_all\" (it has: " + names + ")");
    }
    scores = &j["_all"][metric];
  }
  for (const auto& [key, value] : scores->items()) {
    if (!key.empty() && key[0] == '_') continue;
    const size_t dash = key.find('-');
    int64_t layer = 0, head = 0;
    if (dash == std::string::npos || !parse_index(key.substr(0, dash), layer) || !parse_index(key.substr(dash + 1), head))
      bad_file(path, "key '" + key + "' is not \"layer-head\" (two non-negative integers, e.g. \"0-3\")");
    std::vector<double> values;
    if (value.is_number()) {
      values.push_back(value.get<double>());
    } else if (value.is_array() && !value.empty()) {
      for (const auto& x : value) {
        if (!x.is_number()) bad_file(path, "key '" + key + "' holds a list with a non-number");
        values.push_back(x.get<double>());
      }
    } else {
      bad_file(path, "key '" + key + "' must hold a number or a non-empty list of numbers");
    }
    for (double x : values)
      if (!std::isfinite(x) || x < 0) bad_file(path, "key '" + key + "' holds " + std::to_string(x) + "; scores must be finite and >= 0");
    f.scores[{layer, head}] = numpy_sum(values.data(), values.size()) / static_cast<double>(values.size());
  }
  if (f.scores.empty()) bad_file(path, "holds no \"layer-head\" scores");
  return f;
}

void check_model(const HeadScoreFile& file, const Model& model) {
  const auto& c = model.config();
  if (!file.has_meta) {
    std::fprintf(stderr, "kvsqueeze: warning: head_scores file '%s' has no \"_meta\": cannot check that it was made for this model\n",
                 file.path.c_str());
  } else if (!file.meta_model.empty() || !file.meta_sha.empty()) {
    char sha[32];
    std::snprintf(sha, sizeof sha, "%016llx", static_cast<unsigned long long>(model.fingerprint()));
    const std::filesystem::path p(model.path());
    const std::string meta = normalized(std::filesystem::path(file.meta_model).filename().string());
    const bool name_ok = !meta.empty() && (meta == normalized(c.name) || meta == normalized(p.filename().string()) ||
                                           meta == normalized(p.stem().string()));
    const bool sha_ok = !file.meta_sha.empty() && file.meta_sha == sha;
    if (!name_ok && !sha_ok)
      bad_file(file.path, "made for model '" + file.meta_model + "'" + (file.meta_sha.empty() ? "" : " (sha " + file.meta_sha + ")") +
                              ", not the loaded '" + (c.name.empty() ? p.filename().string() : c.name) + "' (" + p.filename().string() +
                              ", sha " + sha + "); profile this model's heads");
  }
}

std::vector<std::vector<double>> kv_head_scores(const HeadScoreFile& file, int64_t n_layer, int64_t n_head, int64_t n_head_kv) {
  struct {
    int64_t n_layer, n_head, n_head_kv;
  } c{n_layer, n_head, n_head_kv};
  if (c.n_head_kv <= 0 || c.n_head % c.n_head_kv != 0) throw Error("internal: bad head counts for head scores");
  for (const auto& [key, s] : file.scores)
    if (key.first >= c.n_layer || key.second >= c.n_head)
      bad_file(file.path, "has key '" + std::to_string(key.first) + "-" + std::to_string(key.second) + "', but the model has " +
                              std::to_string(c.n_layer) + " layers of " + std::to_string(c.n_head) + " query heads");
  if (static_cast<int64_t>(file.scores.size()) != c.n_layer * c.n_head)
    for (int64_t l = 0; l < c.n_layer; ++l)
      for (int64_t q = 0; q < c.n_head; ++q)
        if (!file.scores.count({l, q}))
          bad_file(file.path, "lacks key '" + std::to_string(l) + "-" + std::to_string(q) + "' (needs all " + std::to_string(c.n_layer) +
                                  " x " + std::to_string(c.n_head) + " \"layer-head\" keys of this model, query heads)");
  const int64_t G = c.n_head / c.n_head_kv;
  std::vector<std::vector<double>> out(static_cast<size_t>(c.n_layer));
  for (int64_t l = 0; l < c.n_layer; ++l)
    for (int64_t h = 0; h < c.n_head_kv; ++h) {
      double s = 0;
      for (int64_t g = 0; g < G; ++g) s += file.scores.at({l, h * G + g});
      out[static_cast<size_t>(l)].push_back(s / static_cast<double>(G));
    }
  return out;
}

}  // namespace kvsqueeze::head_budget
