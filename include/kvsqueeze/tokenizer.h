#pragma once
// Tokenizers built from GGUF metadata: SentencePiece-style ("llama": llama, gemma) and
// byte-level BPE ("gpt2") with the pre-tokenizer named by tokenizer.ggml.pre.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvsqueeze {

class GgufFile;

class Tokenizer {
 public:
  // Throws kvsqueeze::Error naming the problem (unknown tokenizer.ggml.model or .pre, missing arrays).
  static std::unique_ptr<Tokenizer> from_gguf(const GgufFile& file);
  virtual ~Tokenizer() = default;

  // add_bos: prepend BOS when the vocabulary asks for it (tokenizer.ggml.add_bos_token).
  // parse_special: text such as "<start_of_turn>" maps to its control token.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = true) const = 0;
  // Concatenated token bytes; with skip_special, control tokens (BOS, EOS, ...) are dropped.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;
  // The raw bytes one token stands for (may be part of a UTF-8 character).
  virtual std::string token_bytes(int32_t id) const = 0;

  virtual const std::string& model_type() const = 0;  // "llama" or "gpt2"
  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;                 // -1 when none
  virtual int32_t eos_id() const = 0;                 // -1 when none
  virtual bool add_bos_by_default() const = 0;
  virtual bool is_end_of_generation(int32_t id) const = 0;  // EOS, EOT, <end_of_turn>, <|im_end|>, ...
  virtual bool is_control(int32_t id) const = 0;
  virtual const std::string& token_text(int32_t id) const = 0;  // as stored in the vocabulary
};

// Turns a stream of token ids into text that only ever emits whole UTF-8 characters.
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  std::string feed(int32_t id);   // newly completed text, possibly empty
  std::string flush();            // what is left, invalid bytes replaced by U+FFFD

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;
};

}  // namespace kvsqueeze
