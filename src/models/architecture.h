#pragma once
// One file per architecture (as llama.cpp's src/models/): what sets it apart from the generic
// decoder the forward pass runs. Each file fills in the config's switches (rope layout, biases,
// QK-norm, post-norms, activation, sliding windows) from its GGUF metadata; the forward pass and
// the weight loader read only those switches.
#include <string>
#include <vector>

#include "kvsqueeze/gguf.h"
#include "kvsqueeze/model.h"

namespace kvsqueeze::models {

struct Architecture {
  std::string name;  // general.architecture
  ArchFamily family;
  // Sets the architecture's switches; `prefix` is "NAME." for its metadata keys.
  void (*configure)(ModelConfig& config, const GgufFile& file, const std::string& prefix);
};

// Every supported architecture.
const std::vector<Architecture>& architectures();

// Defined by the per-architecture files.
Architecture llama();
Architecture mistral();
Architecture qwen2();
Architecture qwen3();
Architecture gemma3();

}  // namespace kvsqueeze::models
