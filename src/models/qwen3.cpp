// Qwen3: NeoX RoPE and RMS norms on each head's query and key (QK-norm), no biases.
#include "models/architecture.h"

namespace kvsqueeze::models {

Architecture qwen3() {
  return {"qwen3", ArchFamily::Qwen3, [](ModelConfig& c, const GgufFile&, const std::string&) {
            c.rope_neox = true;
            c.qk_norm = true;
          }};
}

}  // namespace kvsqueeze::models
