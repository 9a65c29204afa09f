#pragma once
// Weight views into the mapped GGUF, validated against the config's shapes.
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "kvsqueeze/tensor_type.h"
#include "kvsqueeze/model.h"

namespace kvsqueeze {

struct LayerWeights {
  WeightMatrix wq, wk, wv, wo, w_gate, w_up, w_down;
  std::vector<float> attn_norm, ffn_norm;
  std::vector<float> q_norm, k_norm;                  // qk_norm archs
  std::vector<float> post_attn_norm, post_ffw_norm;   // gemma
  std::vector<float> bq, bk, bv;                      // qwen2
};

struct ModelWeights {
  WeightMatrix token_embd;
  WeightMatrix output;  // == token_embd when tied
  std::vector<float> output_norm;
  std::vector<LayerWeights> layers;
  std::vector<float> inv_freq_global;  // RoPE frequencies of full-attention layers
  std::vector<float> inv_freq_local;   // of sliding-window layers

  // The CPU kernels' packed copies of the matrices (src/backend/cpu/packed_weights.h), made once,
  // all in one huge-page arena.
  std::once_flag packed_once;
  std::shared_ptr<uint8_t> packed_storage;
};

// Builds the weight views; throws kvsqueeze::Error on a missing tensor or shape mismatch.
// May set config.n_vocab, tied_embeddings and n_params.
std::unique_ptr<ModelWeights> load_model_weights(const GgufFile& file, ModelConfig& config);

}  // namespace kvsqueeze
