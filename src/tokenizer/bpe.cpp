// Byte-level BPE ("gpt2" vocabularies: Llama 3, Qwen2/2.5/3, SmolLM, DeepSeek, Mistral tekken...).
//
// The text is cut into pieces by the regex pre-tokenizer named by tokenizer.ggml.pre; each
// piece's bytes start as one symbol each (tokens are spelled with GPT-2's byte-to-unicode map)
// and adjacent symbols are merged by tokenizer.ggml.merges, lowest rank first, leftmost first on
// ties. For the Llama 3 family a piece that is itself a token is emitted whole (ignore_merges, as
// in Llama 3's tokenizer.json and llama.cpp).
#include <string>
#include <unordered_map>

#include "kvsqueeze/error.h"
#include "tokenizer/merge.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/utf8.h"
#include "tokenizer/vocab.h"

namespace kvsqueeze::tok {
namespace {

// GPT-2's reversible map from bytes to printable code points.
struct ByteUnicode {
  uint32_t to_cp[256];
  int16_t to_byte[512];
  ByteUnicode() {
    for (auto& b : to_byte) b = -1;
    uint32_t extra = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_cp[b] = printable ? b : extra++;
      to_byte[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};
const ByteUnicode& byte_unicode() {
  static const ByteUnicode table;
  return table;
}

// True when every character of t is one of the 256 byte-level code points.
bool is_byte_level_spelled(std::string_view t) {
  const ByteUnicode& bu = byte_unicode();
  for (size_t i = 0; i < t.size();) {
    const size_t len = utf8_char_len(t, i);
    if (len == 0) return false;
    const uint32_t cp = utf8_decode(t, i, len);
    if (cp >= 512 || bu.to_byte[cp] < 0) return false;
    i += len;
  }
  return true;
}

std::string spell_bytes(std::string_view bytes) {
  const ByteUnicode& bu = byte_unicode();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) utf8_append(out, bu.to_cp[static_cast<uint8_t>(c)]);
  return out;
}

bool uses_ignore_merges(const std::string& pre) { return pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe"; }

class BpeTokenizer final : public TokenizerBase {
 public:
  explicit BpeTokenizer(const VocabData& v) : TokenizerBase(v) {
    const std::string pre = v.pre.empty() ? "default" : v.pre;
    pre_ = PreTokenizer::for_name(pre);
    ignore_merges_ = uses_ignore_merges(pre);
    const size_t n = tokens_.size();
    // Tokens are looked up by their byte-level spelling; a token stored in plain text (some
    // converters write added tokens that way) is respelled, as HF does.
    spelled_.resize(n);
    lookup_.reserve(n * 2);
    for (size_t i = 0; i < n; ++i) {
      spelled_[i] = is_byte_level_spelled(tokens_[i]) ? tokens_[i] : spell_bytes(tokens_[i]);
      lookup_.insert_or_assign(std::string_view(spelled_[i]), static_cast<int32_t>(i));
    }
    const ByteUnicode& bu = byte_unicode();
    for (int b = 0; b < 256; ++b) {
      std::string ch;
      utf8_append(ch, bu.to_cp[b]);
      auto it = lookup_.find(ch);
      byte_token_[b] = it == lookup_.end() ? -1 : it->second;
    }
    if (v.merges.empty()) throw Error("byte-level BPE vocabulary (gpt2) has no tokenizer.ggml.merges");
    merges_.reserve(v.merges.size() * 2);
    for (size_t r = 0; r < v.merges.size(); ++r) {
      const std::string& m = v.merges[r];
      const size_t sp = m.find(' ', 1);
      if (sp == std::string::npos || sp + 1 >= m.size())
        throw Error("tokenizer.ggml.merges[" + std::to_string(r) + "] '" + m + "' is not two tokens separated by a space");
      const auto left = lookup_.find(std::string_view(m).substr(0, sp));
      const auto right = lookup_.find(std::string_view(m).substr(sp + 1));
      const auto merged = lookup_.find(m.substr(0, sp) + m.substr(sp + 1));
      if (left == lookup_.end() || right == lookup_.end() || merged == lookup_.end())
        throw Error("tokenizer.ggml.merges[" + std::to_string(r) + "] '" + m + "' uses a token missing from the vocabulary");
      const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(left->second)) << 32) |
                           static_cast<uint32_t>(right->second);
      merges_.emplace(key, std::make_pair(static_cast<int32_t>(r), merged->second));  // first rank wins
    }
    // HF registers only control tokens spelled in the byte alphabet (others are converter
    // mislabels) and user-defined tokens whose text is their vocabulary spelling.
    build_specials([this](int32_t id) { return spelled_[static_cast<size_t>(id)] == tokens_[static_cast<size_t>(id)]; });
  }

  std::string token_bytes(int32_t id) const override {
    check_id(id);
    const auto i = static_cast<size_t>(id);
    const std::string& t = tokens_[i];
    if (types_[i] == kControl || types_[i] == kUserDefined) return t;
    const ByteUnicode& bu = byte_unicode();
    std::string out;
    out.reserve(t.size());
    for (size_t p = 0; p < t.size();) {
      size_t len = utf8_char_len(t, p);
      if (len == 0) {
        out += t[p++];
        continue;
      }
      const uint32_t cp = utf8_decode(t, p, len);
      if (cp < 512 && bu.to_byte[cp] >= 0) out += static_cast<char>(bu.to_byte[cp]);
      else out.append(t, p, len);
      p += len;
    }
    return out;
  }

 protected:
  void encode_text(std::string_view text, bool /*at_start*/, std::vector<int32_t>& out) const override {
    std::vector<std::string_view> pieces;
    pre_->split(text, pieces);
    std::vector<Symbol> syms;
    for (std::string_view piece : pieces) {
      if (ignore_merges_) {
        auto it = lookup_.find(spell_bytes(piece));
        if (it != lookup_.end() && types_[static_cast<size_t>(it->second)] != kControl) {
          out.push_back(it->second);
          continue;
        }
      }
      syms.clear();
      for (size_t i = 0; i < piece.size(); ++i) {
        const int32_t id = byte_token_[static_cast<uint8_t>(piece[i])];
        if (id >= 0) syms.push_back(Symbol{id, -1, -1, static_cast<uint32_t>(i), 1, true});
        // A byte without a token is dropped, as HF's BPE (no unk token) does.
      }
      if (syms.size() == 1) {
        out.push_back(syms[0].id);
        continue;
      }
      link_symbols(syms);
      auto lookup = [this](const Symbol& a, const Symbol& b, int32_t* rank, int32_t* merged) {
        const uint64_t key =
            (static_cast<uint64_t>(static_cast<uint32_t>(a.id)) << 32) | static_cast<uint32_t>(b.id);
        auto it = merges_.find(key);
        if (it == merges_.end()) return false;
        *rank = it->second.first;
        *merged = it->second.second;
        return true;
      };
      merge_symbols<int32_t>(syms, lookup, [](int32_t a, int32_t b) { return a < b; }, out);
    }
  }

 private:
  std::unique_ptr<PreTokenizer> pre_;
  bool ignore_merges_ = false;
  std::vector<std::string> spelled_;
  std::unordered_map<std::string_view, int32_t> lookup_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (left, right) -> (rank, merged)
  int32_t byte_token_[256];
};

}  // namespace

std::unique_ptr<Tokenizer> make_bpe_tokenizer(const VocabData& v) { return std::make_unique<BpeTokenizer>(v); }

}  // namespace kvsqueeze::tok
