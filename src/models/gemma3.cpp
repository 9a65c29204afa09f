// Gemma 3: NeoX RoPE, QK-norm, norms after attention and MLP too, GeGLU (tanh GELU), embeddings
// scaled by sqrt(n_embd), and interleaved sliding-window layers with their own RoPE base.
#include <cmath>

#include "models/architecture.h"

namespace kvsqueeze::models {

namespace {

void configure_gemma3(ModelConfig& c, const GgufFile& f, const std::string& a) {
  c.rope_neox = true;
  c.qk_norm = true;
  c.post_norms = true;
  c.activation = Activation::GeluTanhGated;
  c.embed_scale = std::sqrt(static_cast<float>(c.n_embd));
  c.rope_base_local = 10000.0f;  // llama.cpp and HF fix the local base for gemma3
  c.sliding_window = static_cast<int32_t>(f.get_int_opt(a + "attention.sliding_window").value_or(0));
  // Every sixth layer is global, the others slide (llama.cpp swa pattern 6, HF layer_types).
  const int64_t pattern = f.get_int_opt(a + "attention.sliding_window_pattern").value_or(6);
  for (int64_t l = 0; l < c.n_layer; ++l) c.layer_sliding[static_cast<size_t>(l)] = c.sliding_window > 0 && (l + 1) % pattern != 0;
}

}  // namespace

Architecture gemma3() { return {"gemma3", ArchFamily::Gemma3, configure_gemma3}; }

}  // namespace kvsqueeze::models
