#include "kvsqueeze/model.h"

#include <algorithm>
#include <filesystem>

#include "cache/hash64.h"
#include "kvsqueeze/error.h"
#include "model/model_weights.h"

namespace kvsqueeze {
namespace {

void hash_value(Hash64& h, const GgufValue& v) {
  h.add(static_cast<uint32_t>(v.type));
  if (const auto* u = std::get_if<uint64_t>(&v.data)) h.add(*u);
  else if (const auto* i = std::get_if<int64_t>(&v.data)) h.add(*i);
  else if (const auto* d = std::get_if<double>(&v.data)) h.add(*d);
  else if (const auto* b = std::get_if<bool>(&v.data)) h.add<uint8_t>(*b ? 1 : 0);
  else if (const auto* s = std::get_if<std::string>(&v.data)) h.add_string(*s);
  else {
    const GgufArray& a = v.as_array();
    h.add(static_cast<uint32_t>(a.element_type));
    h.add<uint64_t>(a.items.size());
    for (const auto& item : a.items) hash_value(h, item);
  }
}

// See Model::fingerprint(). The hyper-parameters are both the config the engine derived and the
// architecture's own metadata keys, so that a value the engine does not read yet still counts.
uint64_t model_fingerprint(const GgufFile& file, const ModelConfig& c) {
  Hash64 h;
  h.add_string("kvsqueeze model fingerprint v1");
  h.add_string(c.arch_name);
  for (int64_t v : {static_cast<int64_t>(c.family), c.n_vocab, c.n_embd, c.n_layer, c.n_head, c.n_head_kv, c.head_dim_k,
                    c.head_dim_v, c.n_ff, c.n_ctx_train, c.n_rot, static_cast<int64_t>(c.activation),
                    static_cast<int64_t>(c.sliding_window)})
    h.add(v);
  for (float v : {c.rms_eps, c.rope_base, c.rope_base_local, c.rope_scale, c.embed_scale, c.attn_scale}) h.add(v);
  for (bool v : {c.rope_neox, c.qk_norm, c.qkv_bias, c.post_norms, c.tied_embeddings}) h.add<uint8_t>(v ? 1 : 0);
  for (bool v : c.layer_sliding) h.add<uint8_t>(v ? 1 : 0);
  const std::string prefix = c.arch_name + ".";
  for (const auto& [key, value] : file.metadata()) {
    if (key.compare(0, prefix.size(), prefix) != 0) continue;
    h.add_string(key);
    hash_value(h, value);
  }
  constexpr size_t kEdge = 4096;
  h.add<uint64_t>(file.tensors().size());
  for (const auto& t : file.tensors()) {
    h.add_string(t.name);
    h.add(static_cast<uint32_t>(t.type));
    h.add<uint64_t>(t.shape.size());
    for (int64_t d : t.shape) h.add(d);
    h.add(t.offset);
    h.add<uint64_t>(t.n_bytes);
    if (t.data == nullptr) continue;
    const size_t head = std::min(t.n_bytes, kEdge);
    h.update(t.data, head);
    if (t.n_bytes > head) {
      const size_t tail = std::min(t.n_bytes - head, kEdge);
      h.update(t.data + t.n_bytes - tail, tail);
    }
  }
  return h.digest();
}

}  // namespace

Model::~Model() = default;

std::unique_ptr<Model> Model::load(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw FileError(path + ": cannot open model file: it does not exist or is not a regular file");
  try {
    return load_file(path);
  } catch (const ModelError&) {
    throw;
  } catch (const Error& e) {  // everything wrong inside the file: corrupt, truncated, unsupported
    throw ModelError(e.what());
  }
}

std::unique_ptr<Model> Model::load_file(const std::string& path) {
  std::unique_ptr<Model> m(new Model());
  m->path_ = path;
  m->file_ = GgufFile::open(path);
  m->config_ = read_model_config(*m->file_);
  m->weights_ = load_model_weights(*m->file_, m->config_);
  m->tokenizer_ = Tokenizer::from_gguf(*m->file_);
  if (m->tokenizer_->vocab_size() > m->config_.n_vocab)
    throw Error(path + ": tokenizer has " + std::to_string(m->tokenizer_->vocab_size()) + " tokens but token_embd.weight only " +
                std::to_string(m->config_.n_vocab) + " rows");
  m->template_ = std::make_unique<ChatTemplate>(ChatTemplate::for_model(*m->file_));
  m->fingerprint_ = model_fingerprint(*m->file_, m->config_);
  return m;
}

}  // namespace kvsqueeze
