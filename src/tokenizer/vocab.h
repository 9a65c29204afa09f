#pragma once
// The tokenizer description read from GGUF metadata, and the pieces the two tokenizer kinds share.
// Internal header: tests use it to build tokenizers from edited metadata (another pre-tokenizer,
// broken fields) without writing GGUF files.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kvsqueeze/tokenizer.h"

namespace kvsqueeze::tok {

// llama.cpp's token types (tokenizer.ggml.token_type).
enum TokenType : int32_t {
  kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6,
};

struct VocabData {
  std::string model;         // tokenizer.ggml.model: "llama" or "gpt2"
  std::string pre;           // tokenizer.ggml.pre; empty when absent
  std::string architecture;  // general.architecture
  std::vector<std::string> tokens;
  std::vector<float> scores;    // empty when absent
  std::vector<int32_t> types;   // empty when absent (then all normal, <0xXX> as bytes)
  std::vector<std::string> merges;  // "left right", best first (gpt2 only)
  int32_t bos = -1, eos = -1, unk = -1, pad = -1, eot = -1, eom = -1;  // -1: none
  std::optional<bool> add_bos;           // tokenizer.ggml.add_bos_token
  std::optional<bool> add_space_prefix;  // tokenizer.ggml.add_space_prefix
};

// Reads the tokenizer.* keys; throws kvsqueeze::Error naming a missing or malformed key.
VocabData read_vocab(const GgufFile& file);

// Builds the tokenizer the description asks for; throws kvsqueeze::Error on an unknown model or
// pre-tokenizer, or inconsistent arrays.
std::unique_ptr<Tokenizer> build_tokenizer(const VocabData& vocab);

std::unique_ptr<Tokenizer> make_spm_tokenizer(const VocabData& vocab);  // model "llama"
std::unique_ptr<Tokenizer> make_bpe_tokenizer(const VocabData& vocab);  // model "gpt2"

// Splits text into runs of plain text and special tokens, matched leftmost-longest as HF's
// added-token matcher (Aho-Corasick, LeftmostLongest) does.
class SpecialMatcher {
 public:
  // control: matched only when parse_special; otherwise (user-defined) always matched.
  void add(std::string_view text, int32_t id, bool control);

  struct Piece {
    std::string_view text;  // plain text when id < 0
    int32_t id = -1;
    size_t offset = 0;  // byte offset of the piece in the input
  };
  void split(std::string_view text, bool parse_special, std::vector<Piece>& out) const;
  bool empty() const { return nodes_.size() <= 1; }

 private:
  struct Node {
    int32_t id = -1;
    bool control = false;
  };
  int32_t child(int32_t node, uint8_t byte) const;
  std::vector<Node> nodes_{Node{}};
  std::unordered_map<uint64_t, int32_t> edges_;  // (node << 8 | byte) -> child
  bool first_byte_[256] = {};
};

// State and behaviour common to the SentencePiece-style and byte-level BPE tokenizers.
class TokenizerBase : public Tokenizer {
 public:
  explicit TokenizerBase(const VocabData& v);

  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = true) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;

  const std::string& model_type() const override { return model_; }
  int32_t vocab_size() const override { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  bool add_bos_by_default() const override { return add_bos_; }
  bool is_end_of_generation(int32_t id) const override;
  bool is_control(int32_t id) const override;
  bool is_skipped_special(int32_t id) const override;
  const std::string& token_text(int32_t id) const override;

 protected:
  // Tokenizes one stretch of plain text (no special tokens in it). at_start: it begins the input.
  virtual void encode_text(std::string_view text, bool at_start, std::vector<int32_t>& out) const = 0;
  // Registers the tokens matched whole in the text: control and unknown tokens and the BOS/EOS/
  // UNK/PAD ids (as HF's special tokens), user-defined ones always. accept filters them.
  template <typename Accept>
  void build_specials(Accept accept) {
    for (int32_t id = 0; id < vocab_size(); ++id) {
      const int32_t t = type_of(id);
      const bool listed = id == bos_ || id == eos_ || id == unk_ || id == pad_;
      if (!(t == kControl || t == kUnknown || t == kUserDefined || listed) || !accept(id)) continue;
      specials_.add(tokens_[static_cast<size_t>(id)], id, t != kUserDefined);
    }
  }
  void check_id(int32_t id) const;
  int32_t type_of(int32_t id) const { return types_[static_cast<size_t>(id)]; }

  std::string model_;
  std::vector<std::string> tokens_;
  std::vector<int32_t> types_;  // filled in for every token
  int32_t bos_ = -1, eos_ = -1, unk_ = -1, pad_ = -1;
  bool add_bos_ = false;
  std::vector<bool> eog_;
  std::vector<bool> special_;  // dropped by decode(skip_special)
  SpecialMatcher specials_;
};

}  // namespace kvsqueeze::tok
