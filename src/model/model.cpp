#include "kvsqueeze/model.h"

#include "kvsqueeze/error.h"
#include "model/model_weights.h"

namespace kvsqueeze {

Model::~Model() = default;

std::unique_ptr<Model> Model::load(const std::string& path) {
  std::unique_ptr<Model> m(new Model());
  m->path_ = path;
  m->file_ = GgufFile::open(path);
  m->config_ = read_model_config(*m->file_);
  m->weights_ = std::make_unique<ModelWeights>(load_model_weights(*m->file_, m->config_));
  m->tokenizer_ = Tokenizer::from_gguf(*m->file_);
  if (m->tokenizer_->vocab_size() > m->config_.n_vocab)
    throw Error(path + ": tokenizer has " + std::to_string(m->tokenizer_->vocab_size()) + " tokens but token_embd.weight only " +
                std::to_string(m->config_.n_vocab) + " rows");
  m->template_ = std::make_unique<ChatTemplate>(ChatTemplate::for_model(*m->file_));
  return m;
}

}  // namespace kvsqueeze
