// SentencePiece-style BPE ("llama" vocabularies: Llama 1/2, TinyStories, Gemma...).
//
// Text is normalized by writing spaces as U+2581 ("▁"), optionally with one "▁" prepended, then cut
// into characters; a character missing from the vocabulary falls back to its <0xXX> byte tokens.
// Adjacent symbols whose concatenation is a token are merged greedily, highest score first.
//
// The behaviour reproduces the tokenizer HF transformers builds from the same GGUF, which is
// what the reference pipeline (kvpress) runs:
//  * Merge priority is the merged token's score (Gemma: its position in the vocabulary, lower
//    id first), ties broken by the longer left part, then the longer right part, then vocabulary
//    order, then the leftmost position — the order of the merge list HF derives from the scores.
//  * Space prefix (tokenizer.ggml.add_space_prefix, default true except Gemma): "▁" is prepended
//    only to text at the very start of the input (not after a special token) and only when that
//    text does not already start with a space (HF Metaspace prepend_scheme="first").
//  * Gemma stores its runs of 2..31 spaces as plain spaces; they are looked up as "▁▁...".
#include <cstdio>
#include <string>
#include <unordered_map>

#include "kvsqueeze/error.h"
#include "tokenizer/merge.h"
#include "tokenizer/utf8.h"
#include "tokenizer/vocab.h"

namespace kvsqueeze::tok {
namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581

bool is_gemma_architecture(const std::string& arch) {
  return arch == "gemma" || arch == "gemma2" || arch == "gemma3" || arch == "gemma3n";
}

struct SpmKey {
  double score;
  int32_t len_left, len_right, merged, id_left, id_right;
};

bool spm_better(const SpmKey& a, const SpmKey& b) {
  if (a.score != b.score) return a.score > b.score;
  if (a.len_left != b.len_left) return a.len_left > b.len_left;
  if (a.len_right != b.len_right) return a.len_right > b.len_right;
  if (a.merged != b.merged) return a.merged < b.merged;
  if (a.id_left != b.id_left) return a.id_left < b.id_left;
  return a.id_right < b.id_right;
}

class SpmTokenizer final : public TokenizerBase {
 public:
  explicit SpmTokenizer(const VocabData& v) : TokenizerBase(v) {
    gemma_ = is_gemma_architecture(v.architecture);
    add_prefix_ = !gemma_ && v.add_space_prefix.value_or(true);
    const size_t n = tokens_.size();
    spelled_.resize(n);
    respelled_.assign(n, false);
    merge_score_.resize(n);
    char_len_.resize(n);
    lookup_.reserve(n * 2);
    for (int& b : byte_ids_) b = -1;
    for (size_t i = 0; i < n; ++i) {
      const std::string& t = tokens_[i];
      std::string s = t;
      if (gemma_ && t.size() >= 2 && t.find_first_not_of(' ') == std::string::npos) {
        s.clear();
        for (size_t k = 0; k < t.size(); ++k) s += kSpace;
        respelled_[i] = true;
      }
      spelled_[i] = std::move(s);
      merge_score_[i] = (gemma_ || v.scores.empty()) ? -static_cast<double>(i) : static_cast<double>(v.scores[i]);
      char_len_[i] = static_cast<int32_t>(utf8_count_chars(spelled_[i]));
      const int32_t type = types_[i];
      if (type == kByte) {
        unsigned value = 0;
        if (std::sscanf(t.c_str(), "<0x%2X>", &value) == 1 && value < 256) byte_ids_[value] = static_cast<int32_t>(i);
        continue;
      }
      // Control and unknown tokens are never produced by merging: they only come from their
      // literal text when special tokens are parsed.
      if (type == kControl || type == kUnknown) continue;
      if (!spelled_[i].empty()) lookup_.insert_or_assign(std::string_view(spelled_[i]), static_cast<int32_t>(i));
    }
    // Gemma's space runs are looked up as "▁▁..." only (HF renames them), so they are not matched
    // as literal user-defined text.
    build_specials([this](int32_t id) { return !respelled_[static_cast<size_t>(id)]; });
  }

  std::string token_bytes(int32_t id) const override {
    check_id(id);
    const auto i = static_cast<size_t>(id);
    if (types_[i] == kByte) {
      unsigned value = 0;
      if (std::sscanf(tokens_[i].c_str(), "<0x%2X>", &value) == 1 && value < 256)
        return std::string(1, static_cast<char>(value));
    }
    const std::string& t = tokens_[i];
    std::string out;
    out.reserve(t.size());
    for (size_t p = 0; p < t.size();) {
      if (t.compare(p, kSpace.size(), kSpace) == 0) {
        out += ' ';
        p += kSpace.size();
      } else {
        out += t[p++];
      }
    }
    return out;
  }

  bool decode_strips_leading_space() const override { return add_prefix_; }

 protected:
  void encode_text(std::string_view text, bool at_start, std::vector<int32_t>& out) const override {
    if (text.empty()) return;
    std::string norm;
    norm.reserve(text.size() + 8);
    const bool starts_with_space = text[0] == ' ' || text.substr(0, kSpace.size()) == kSpace;
    if (add_prefix_ && at_start && !starts_with_space) norm += kSpace;
    for (char c : text) {
      if (c == ' ') norm += kSpace;
      else norm += c;
    }

    std::vector<Symbol> syms;
    syms.reserve(norm.size());
    for (size_t i = 0; i < norm.size();) {
      size_t len = utf8_char_len(norm, i);
      if (len == 0) len = 1;  // cannot happen: the input was sanitized
      auto it = lookup_.find(std::string_view(norm).substr(i, len));
      if (it != lookup_.end()) {
        syms.push_back(Symbol{it->second, -1, -1, static_cast<uint32_t>(i), static_cast<uint32_t>(len), true});
      } else {
        for (size_t k = 0; k < len; ++k) {
          const int32_t id = byte_ids_[static_cast<uint8_t>(norm[i + k])];
          if (id >= 0) syms.push_back(Symbol{id, -1, -1, static_cast<uint32_t>(i + k), 1, false});
          else if (unk_ >= 0) syms.push_back(Symbol{unk_, -1, -1, static_cast<uint32_t>(i + k), 1, false});
        }
      }
      i += len;
    }
    link_symbols(syms);
    const std::string_view nv(norm);
    auto lookup = [&](const Symbol& a, const Symbol& b, SpmKey* key, int32_t* merged) {
      if (a.start + a.len != b.start) return false;  // a byte with no token was dropped in between
      auto it = lookup_.find(nv.substr(a.start, a.len + b.len));
      if (it == lookup_.end()) return false;
      const int32_t m = it->second;
      *merged = m;
      *key = SpmKey{merge_score_[static_cast<size_t>(m)], char_len_[static_cast<size_t>(a.id)],
                    char_len_[static_cast<size_t>(b.id)], m, a.id, b.id};
      return true;
    };
    merge_symbols<SpmKey>(syms, lookup, spm_better, out);
  }

 private:
  bool gemma_ = false;
  bool add_prefix_ = true;
  std::vector<std::string> spelled_;
  std::vector<bool> respelled_;
  std::vector<double> merge_score_;
  std::vector<int32_t> char_len_;
  std::unordered_map<std::string_view, int32_t> lookup_;
  int32_t byte_ids_[256];
};

}  // namespace

std::unique_ptr<Tokenizer> make_spm_tokenizer(const VocabData& v) { return std::make_unique<SpmTokenizer>(v); }

}  // namespace kvsqueeze::tok
