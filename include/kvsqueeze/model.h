#pragma once
// A loaded model: hyper-parameters, memory-mapped weights, tokenizer and chat template.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvsqueeze/chat_template.h"
#include "kvsqueeze/gguf.h"
#include "kvsqueeze/tokenizer.h"

namespace kvsqueeze {

enum class ArchFamily { Llama, Qwen2, Qwen3, Gemma3 };
enum class Activation { SiluGated, GeluTanhGated };

struct ModelConfig {
  std::string arch_name;  // general.architecture as written in the file
  ArchFamily family = ArchFamily::Llama;
  std::string name;       // general.name, if any
  int64_t n_vocab = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim_k = 0;
  int64_t head_dim_v = 0;
  int64_t n_ff = 0;
  int64_t n_ctx_train = 0;
  int64_t n_rot = 0;           // channels rotated by RoPE (== head_dim_k for supported archs)
  float rms_eps = 1e-5f;
  float rope_base = 10000.0f;       // global (full-attention) layers
  float rope_base_local = 10000.0f; // sliding-window layers
  float rope_scale = 1.0f;          // linear position scaling of global layers (1 = none)
  bool rope_neox = false;           // rotate (i, i+d/2) instead of adjacent pairs
  bool qk_norm = false;
  bool qkv_bias = false;
  bool post_norms = false;          // gemma: norms after attention and FFN outputs
  bool tied_embeddings = false;
  float embed_scale = 1.0f;         // gemma: sqrt(n_embd)
  float attn_scale = 0.0f;          // multiplies q.k
  Activation activation = Activation::SiluGated;
  int32_t sliding_window = 0;       // window of sliding layers (0: none)
  std::vector<bool> layer_sliding;  // per layer

  // KV bytes per token of an uncompressed fp16 cache (all layers and KV heads).
  int64_t kv_bytes_per_token_f16() const { return n_layer * n_head_kv * (head_dim_k + head_dim_v) * 2; }
  int64_t n_params = 0;  // elements in all weight tensors
};

struct ModelWeights;  // private: see src/model/model_weights.h

class Model {
 public:
  // Opens, validates and maps a GGUF model. Throws FileError when the file is missing and
  // ModelError (one clear line) when it is corrupt, truncated or unsupported. A loaded model is
  // immutable: any number of sessions on any threads may share it.
  static std::unique_ptr<Model> load(const std::string& path);
  ~Model();

  const ModelConfig& config() const { return config_; }
  const GgufFile& gguf() const { return *file_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ChatTemplate& chat_template() const { return *template_; }
  const ModelWeights& weights() const { return *weights_; }
  const std::string& path() const { return path_; }
  // Identity of the model for saved caches: a 64-bit hash of the architecture, the
  // hyper-parameters, every tensor's name, type, shape and offset and the first and last 4 KiB
  // of its data. Computed once at load (cheap: never reads the whole file).
  uint64_t fingerprint() const { return fingerprint_; }

 private:
  static std::unique_ptr<Model> load_file(const std::string& path);
  Model() = default;
  std::string path_;
  std::unique_ptr<GgufFile> file_;
  ModelConfig config_;
  std::unique_ptr<ModelWeights> weights_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ChatTemplate> template_;
  uint64_t fingerprint_ = 0;
};

// Reads and validates hyper-parameters from metadata (exposed for tests and `inspect`).
ModelConfig read_model_config(const GgufFile& file);
std::vector<std::string> supported_architectures();

}  // namespace kvsqueeze
