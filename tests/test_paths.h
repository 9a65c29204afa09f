#pragma once
// Where tests find shared models and committed fixtures.
#include <cstdlib>
#include <filesystem>
#include <string>

#include <unistd.h>

namespace test_paths {

inline std::string source_dir() { return KVSQ_SOURCE_DIR; }
inline std::string cli() { return KVSQ_CLI_PATH; }
inline std::string shared_dir() {
  if (const char* env = std::getenv("KVSQ_SHARED_DIR")) return env;
  return source_dir() + "/../shared";
}
inline std::string stories260k() { return shared_dir() + "/models/stories260K.gguf"; }
inline std::string fixtures() { return source_dir() + "/tests/fixtures"; }
// The default model, obtained by scripts/get_default_model.sh; empty when absent.
inline std::string default_model() {
  const char* env = std::getenv("KVSQ_DEFAULT_MODEL");
  std::string path = env ? env : "";
  if (path.empty()) {
    const char* home = std::getenv("HOME");
    path = std::string(home ? home : ".") + "/.cache/kvsqueeze/models/gemma-3-270m-q4_k_m.gguf";
  }
  return std::filesystem::exists(path) ? path : "";
}
// Scratch directory for generated synthetic models.
inline std::string scratch_dir() {
  auto dir = std::filesystem::temp_directory_path() / "kvsqueeze-tests";
  std::filesystem::create_directories(dir);
  return dir.string();
}

// Distinguishes files of concurrently running test processes.
inline std::string process_tag() {
  std::string tag = "-";
  tag += std::to_string(::getpid());
  return tag;
}

}  // namespace test_paths
