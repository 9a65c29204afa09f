#pragma once
// Resolves the model a reference fixture was made from: the shared real models, the default
// model, or a synthetic GGUF regenerated with the exact command recorded in the fixture.
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
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

// Path of the fixture's model, or "" when it cannot be had (e.g. the default model is absent).
// Synthetic models are regenerated once into the scratch folder and checked by sha256.
inline std::string model_path(const nlohmann::json& fixture, std::string* why) {
  const auto& m = fixture.at("model");
  const std::string kind = m.at("kind");
  const std::string file = m.at("file");
  if (kind == "real") {
    std::string path;
    if (file.find("stories260K") != std::string::npos) path = test_paths::stories260k();
    else path = test_paths::gemma_model();
    if (path.empty()) *why = "default model not present (run scripts/get_default_model.sh)";
    return path;
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

}  // namespace fixture_models
