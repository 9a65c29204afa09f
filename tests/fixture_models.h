#pragma once
// Resolves the model a reference fixture was made from: stories260K, the cached real models (the
// Qwen2.5-Coder instruct models, Gemma 3 270M), or a synthetic GGUF regenerated with the exact
// command recorded in the fixture.
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "test_paths.h"

namespace fixture_models {

inline nlohmann::json load_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read fixture " + path);
  return nlohmann::json::parse(in);
}

inline std::string run_capture(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  pclose(p);
  return out;
}

inline std::string sha256_of(const std::string& path) {
  const std::string out = run_capture("sha256sum '" + path + "' 2>/dev/null");
  return out.substr(0, out.find(' '));
}

inline std::string python() {
  const char* env = std::getenv("KVSQ_PYTHON");
  return env && *env ? env : "python3";
}

// A real fixture names its model by file name (model.file); this is where the tests find it, and
// how to get it when it is absent. Throws for a file no rule knows, so that a new fixture cannot
// silently run against the wrong model.
struct RealModel {
  std::string path;  // "" when absent
  std::string get;   // the command that obtains it
};
inline RealModel real_model(const std::string& file) {
  auto has = [&](const char* s) { return file.find(s) != std::string::npos; };
  if (has("stories260K")) return {test_paths::stories260k(), "it lives in ../shared/models"};
  if (has("qwen2.5-coder-0.5b-instruct"))
    return {test_paths::default_model(), "scripts/get_model.sh qwen2.5-0.5b-instruct, or set KVSQ_DEFAULT_MODEL"};
  if (has("qwen2.5-coder-1.5b-instruct"))
    return {test_paths::qwen15_model(), "scripts/get_model.sh qwen2.5-1.5b-instruct, or set KVSQ_QWEN15_MODEL"};
  if (has("gemma-3-270m")) return {test_paths::gemma_model(), "scripts/get_model.sh gemma3-270m, or set KVSQ_GEMMA_MODEL"};
  throw std::runtime_error("fixture names a real model this test does not know: " + file);
}

// Path of the fixture's model, or "" (with the reason in *why) when it cannot be had: a real model
// that is not in the cache folder. Synthetic models are regenerated once into the scratch folder
// and checked by sha256.
inline std::string model_path(const nlohmann::json& fixture, std::string* why) {
  const auto& m = fixture.at("model");
  const std::string kind = m.at("kind");
  const std::string file = m.at("file");
  if (kind == "real") {
    const RealModel r = real_model(file);
    if (r.path.empty()) *why = std::filesystem::path(file).filename().string() + " not present (" + r.get + ")";
    return r.path;
  }
  const std::string out = test_paths::scratch_dir() + "/" + file;
  const std::string want = m.at("sha256");
  if (!std::filesystem::exists(out) || sha256_of(out) != want) {
    // Written under a private name and renamed: other test processes may want the same file.
    const std::string tmp = out + test_paths::process_tag() + ".tmp";
    std::string cmd = m.at("generator").at("command");
    cmd.replace(cmd.find("{out}"), 5, "'" + tmp + "'");
    if (cmd.rfind("python3 ", 0) == 0) cmd = python() + cmd.substr(7);
    cmd = "cd '" + test_paths::source_dir() + "' && " + cmd + " > /dev/null";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("generator failed: " + cmd);
    std::filesystem::rename(tmp, out);
    const std::string got = sha256_of(out);
    if (got != want)
      throw std::runtime_error("regenerated " + file + " has sha256 " + got + ", fixture expects " + want +
                               " (generator or numpy/gguf version drift)");
  }
  return out;
}

// A test model by name: "stories260k" (the shared real model) or a logits fixture's
// (tests/fixtures/logits/NAME.json); "" with the reason in *why when it cannot be had.
inline std::string test_model_path(const std::string& name, std::string* why) {
  if (name != "stories260k") return model_path(load_json(test_paths::fixtures() + "/logits/" + name + ".json"), why);
  const std::string path = test_paths::stories260k();
  if (std::filesystem::exists(path)) return path;
  *why = "missing " + path;
  return "";
}

}  // namespace fixture_models
