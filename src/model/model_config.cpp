// Hyper-parameters from GGUF metadata, following llama.cpp's interpretation of each architecture.
#include <cmath>

#include "kvsqueeze/error.h"
#include "kvsqueeze/model.h"
#include "models/architecture.h"

namespace kvsqueeze {
namespace {

int64_t positive(const GgufFile& f, const std::string& key, int64_t value) {
  if (value <= 0 || value > (int64_t{1} << 31))
    throw Error(f.path() + ": metadata '" + key + "' = " + std::to_string(value) + " is out of range");
  return value;
}

// Some converters write per-layer arrays (e.g. feed_forward_length); we need them uniform.
int64_t uniform_int(const GgufFile& f, const std::string& key) {
  const GgufValue* v = f.find(key);
  if (!v) throw Error(f.path() + ": missing metadata key '" + key + "'");
  if (!v->is_array()) return positive(f, key, f.get_int(key));
  const auto& items = v->as_array().items;
  if (items.empty()) throw Error(f.path() + ": metadata '" + key + "' is an empty array");
  int64_t first = items[0].as_int();
  for (const auto& it : items)
    if (it.as_int() != first) throw Error(f.path() + ": per-layer values of '" + key + "' differ; not supported");
  return positive(f, key, first);
}

}  // namespace

std::vector<std::string> supported_architectures() {
  std::vector<std::string> names;
  for (const auto& a : models::architectures()) names.push_back(a.name);
  return names;
}

ModelConfig read_model_config(const GgufFile& f) {
  ModelConfig c;
  c.arch_name = f.get_string("general.architecture");
  const models::Architecture* arch = nullptr;
  for (const auto& a : models::architectures())
    if (c.arch_name == a.name) arch = &a;
  if (!arch) {
    std::string valid;
    for (const auto& n : supported_architectures()) valid += (valid.empty() ? "" : ", ") + n;
    throw Error(f.path() + ": unknown architecture '" + c.arch_name + "' (supported: " + valid + ")");
  }
  c.family = arch->family;
  const std::string a = c.arch_name + ".";
  c.name = f.get_string_opt("general.name").value_or("");
  c.n_embd = uniform_int(f, a + "embedding_length");
  c.n_layer = uniform_int(f, a + "block_count");
  c.n_head = uniform_int(f, a + "attention.head_count");
  c.n_head_kv = f.has(a + "attention.head_count_kv") ? uniform_int(f, a + "attention.head_count_kv") : c.n_head;
  c.n_ff = uniform_int(f, a + "feed_forward_length");
  c.n_ctx_train = f.has(a + "context_length") ? uniform_int(f, a + "context_length") : 2048;
  if (c.n_head % c.n_head_kv != 0)
    throw Error(f.path() + ": head_count " + std::to_string(c.n_head) + " is not a multiple of head_count_kv " +
                std::to_string(c.n_head_kv));
  c.head_dim_k = f.has(a + "attention.key_length") ? uniform_int(f, a + "attention.key_length") : c.n_embd / c.n_head;
  c.head_dim_v = f.has(a + "attention.value_length") ? uniform_int(f, a + "attention.value_length") : c.head_dim_k;
  c.n_rot = f.has(a + "rope.dimension_count") ? uniform_int(f, a + "rope.dimension_count") : c.head_dim_k;
  if (c.n_rot != c.head_dim_k || c.head_dim_k % 2 != 0)
    throw Error(f.path() + ": partial or odd rotary dimensions (rope.dimension_count " + std::to_string(c.n_rot) +
                ", key_length " + std::to_string(c.head_dim_k) + ") are not supported");
  c.rms_eps = static_cast<float>(f.get_float_opt(a + "attention.layer_norm_rms_epsilon").value_or(1e-5));
  c.rope_base = static_cast<float>(f.get_float_opt(a + "rope.freq_base").value_or(10000.0));
  c.rope_base_local = c.rope_base;
  if (auto type = f.get_string_opt(a + "rope.scaling.type"); type && *type == "linear")
    c.rope_scale = 1.0f / static_cast<float>(f.get_float(a + "rope.scaling.factor"));
  c.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim_k));
  c.layer_sliding.assign(static_cast<size_t>(c.n_layer), false);

  arch->configure(c, f, a);  // what sets this architecture apart: src/models/NAME.cpp
  return c;
}

}  // namespace kvsqueeze
