// Qwen2 / Qwen2.5: NeoX RoPE (rotate halves) and biases on the q, k and v projections.
#include "models/architecture.h"

namespace kvsqueeze::models {

Architecture qwen2() {
  return {"qwen2", ArchFamily::Qwen2, [](ModelConfig& c, const GgufFile&, const std::string&) {
            c.rope_neox = true;
            c.qkv_bias = true;
          }};
}

}  // namespace kvsqueeze::models
