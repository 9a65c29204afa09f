#pragma once
// The KV cache type flags every command shares, named as llama.cpp names them:
// --cache-type-k / -ctk and --cache-type-v / -ctv, plus --kv-type for both at once and
// --kv-rotation (Walsh-Hadamard rotated rows) and --kv-centering (keys stored centred).
#include <CLI/CLI.hpp>
#include <string>

#include "kvsqueeze/session.h"

namespace kvsqueeze::cli {

struct KvTypeFlags {
  std::string both = "f16", k, v, rotation = "auto", centering = "auto";
  CLI::Option* both_option = nullptr;
  CLI::Option* k_option = nullptr;
  CLI::Option* v_option = nullptr;

  void add_to(CLI::App& sub);
  bool given() const;  // whether any of the three was on the command line
  // The key and value types: -ctk / -ctv where given, --kv-type otherwise (errors name the flag).
  KvType k_type() const;
  KvType v_type() const;
  void apply(SessionOptions& options) const;
  // "f16" when keys and values share a type, else "q8_0/f16" (keys/values): reports and file names.
  std::string label() const;
};

// llama.cpp's multi-letter short flags (-ctk, -ctv) rewritten to their long names, which CLI11
// can parse (it allows one-letter short flags only).
void rewrite_llama_flags(int argc, char** argv);

}  // namespace kvsqueeze::cli
