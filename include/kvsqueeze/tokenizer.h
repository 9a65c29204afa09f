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

  // add_bos: prepend BOS (callers pass add_bos_by_default(), i.e. tokenizer.ggml.add_bos_token).
  // Nothing is prepended when the vocabulary has no BOS or when the text itself already starts
  // with the BOS token (a chat template that renders "<bos>"), so BOS is never doubled.
  // parse_special: text such as "<start_of_turn>" maps to its control token. User-defined tokens
  // (token_type 4, e.g. Gemma's "\n" or "<table>") are always matched whole, as in HF and llama.cpp.
  // The ids equal those of the HF tokenizer transformers builds from the same GGUF (encode with
  // add_special_tokens=False); text that is not valid UTF-8 is first sanitized (U+FFFD).
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = true) const = 0;
  // Concatenated token bytes; with skip_special, control tokens (BOS, EOS, ...) are dropped.
  // SentencePiece vocabularies with a space prefix drop the one leading space of the result, as
  // SentencePiece and HF do. Ill-formed UTF-8 (a cut multi-byte character) becomes U+FFFD.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;
  // The raw bytes one token stands for (may be part of a UTF-8 character).
  virtual std::string token_bytes(int32_t id) const = 0;
  // True when decode() drops one leading space of its output (SentencePiece with a space prefix).
  virtual bool decode_strips_leading_space() const { return false; }
  // True for the tokens decode(ids, skip_special=true) drops: control tokens, BOS/EOS/UNK/PAD.
  virtual bool is_skipped_special(int32_t id) const { return is_control(id); }

  virtual const std::string& model_type() const = 0;  // "llama" or "gpt2"
  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;                 // -1 when none
  virtual int32_t eos_id() const = 0;                 // -1 when none
  virtual bool add_bos_by_default() const = 0;
  virtual bool is_end_of_generation(int32_t id) const = 0;  // EOS, EOT, <end_of_turn>, <|im_end|>, ...
  virtual bool is_control(int32_t id) const = 0;
  virtual const std::string& token_text(int32_t id) const = 0;  // as stored in the vocabulary
};

// Turns a stream of token ids into text that only ever emits whole UTF-8 characters. The
// concatenation of everything feed() and flush() return equals tokenizer.decode(ids, skip_special)
// of the same ids (including the leading-space rule and U+FFFD for ill-formed bytes), which is
// what kvpress reports as the answer. Pass starts_text = false when the ids continue text already
// shown (a completion printed after its prompt): then a SentencePiece "▁word" keeps its space.
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special = false, bool starts_text = true)
      : tokenizer_(tokenizer), skip_special_(skip_special), at_start_(starts_text) {}
  std::string feed(int32_t id);   // newly completed text, possibly empty
  std::string flush();            // what is left, invalid bytes replaced by U+FFFD

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_ = false;
  bool at_start_ = true;  // nothing emitted yet (for the leading-space rule)
  std::string pending_;
};

}  // namespace kvsqueeze
