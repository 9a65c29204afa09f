#include "tokenizer/vocab.h"

#include <algorithm>
#include <cctype>
#include <climits>

#include "kvsqueeze/error.h"
#include "kvsqueeze/gguf.h"
#include "tokenizer/utf8.h"

namespace kvsqueeze::tok {
namespace {

const GgufArray* find_array(const GgufFile& f, const std::string& key, bool required) {
  const GgufValue* v = f.find(key);
  if (!v) {
    if (required) throw Error("GGUF has no " + key + ": cannot build a tokenizer");
    return nullptr;
  }
  if (!v->is_array()) throw Error(key + " must be an array, got " + gguf_value_type_name(v->type));
  return &v->as_array();
}

// Reads every element of an array, naming the key when one has the wrong type.
template <typename F>
void read_items(const GgufArray& a, const std::string& key, F f) {
  try {
    for (const auto& item : a.items) f(item);
  } catch (const Error& e) {
    throw Error(key + ": " + e.what());
  }
}

int32_t read_id(const GgufFile& f, const std::string& key) {
  const auto v = f.get_int_opt(key);
  return v ? static_cast<int32_t>(std::clamp<int64_t>(*v, -1, INT32_MAX)) : -1;
}

bool looks_like_byte_token(const std::string& t) {
  return t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
         std::isxdigit(static_cast<unsigned char>(t[3])) && std::isxdigit(static_cast<unsigned char>(t[4]));
}

// Tokens that mark the end of a turn in the chat formats we know, by their text.
constexpr const char* kEndOfGenerationTexts[] = {
    "<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "<|EOT|>", "<|return|>", "<|call|>", "<|end_of_turn|>", "<end_of_utterance>",
    "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",  // DeepSeek's <｜end▁of▁sentence｜>
};

}  // namespace

VocabData read_vocab(const GgufFile& f) {
  VocabData v;
  const auto model = f.get_string_opt("tokenizer.ggml.model");
  if (!model) throw Error("GGUF has no tokenizer.ggml.model: cannot build a tokenizer");
  v.model = *model;
  v.pre = f.get_string_opt("tokenizer.ggml.pre").value_or("");
  v.architecture = f.get_string_opt("general.architecture").value_or("");

  const GgufArray* tokens = find_array(f, "tokenizer.ggml.tokens", true);
  v.tokens.reserve(tokens->items.size());
  read_items(*tokens, "tokenizer.ggml.tokens", [&](const GgufValue& x) { v.tokens.push_back(x.as_string()); });
  if (const GgufArray* a = find_array(f, "tokenizer.ggml.scores", false)) {
    v.scores.reserve(a->items.size());
    read_items(*a, "tokenizer.ggml.scores",
               [&](const GgufValue& x) { v.scores.push_back(static_cast<float>(x.as_float())); });
  }
  if (const GgufArray* a = find_array(f, "tokenizer.ggml.token_type", false)) {
    v.types.reserve(a->items.size());
    read_items(*a, "tokenizer.ggml.token_type",
               [&](const GgufValue& x) { v.types.push_back(static_cast<int32_t>(x.as_int())); });
  }
  if (const GgufArray* a = find_array(f, "tokenizer.ggml.merges", false)) {
    v.merges.reserve(a->items.size());
    read_items(*a, "tokenizer.ggml.merges", [&](const GgufValue& x) { v.merges.push_back(x.as_string()); });
  }
  v.bos = read_id(f, "tokenizer.ggml.bos_token_id");
  v.eos = read_id(f, "tokenizer.ggml.eos_token_id");
  v.unk = read_id(f, "tokenizer.ggml.unknown_token_id");
  v.pad = read_id(f, "tokenizer.ggml.padding_token_id");
  v.eot = read_id(f, "tokenizer.ggml.eot_token_id");
  v.eom = read_id(f, "tokenizer.ggml.eom_token_id");
  v.add_bos = f.get_bool_opt("tokenizer.ggml.add_bos_token");
  v.add_space_prefix = f.get_bool_opt("tokenizer.ggml.add_space_prefix");
  return v;
}

std::unique_ptr<Tokenizer> build_tokenizer(const VocabData& v) {
  if (v.model == "llama") return make_spm_tokenizer(v);
  if (v.model == "gpt2") return make_bpe_tokenizer(v);
  throw Error("unsupported tokenizer.ggml.model '" + v.model +
              "'; supported: llama (SentencePiece-style BPE), gpt2 (byte-level BPE)");
}

// --- SpecialMatcher ------------------------------------------------------------------------------

int32_t SpecialMatcher::child(int32_t node, uint8_t byte) const {
  auto it = edges_.find((static_cast<uint64_t>(node) << 8) | byte);
  return it == edges_.end() ? -1 : it->second;
}

void SpecialMatcher::add(std::string_view text, int32_t id, bool control) {
  if (text.empty()) return;
  int32_t node = 0;
  for (char c : text) {
    const auto b = static_cast<uint8_t>(c);
    int32_t next = child(node, b);
    if (next < 0) {
      next = static_cast<int32_t>(nodes_.size());
      nodes_.push_back(Node{});
      edges_.emplace((static_cast<uint64_t>(node) << 8) | b, next);
    }
    node = next;
  }
  if (nodes_[static_cast<size_t>(node)].id < 0) nodes_[static_cast<size_t>(node)] = Node{id, control};
  first_byte_[static_cast<uint8_t>(text[0])] = true;
}

void SpecialMatcher::split(std::string_view text, bool parse_special, std::vector<Piece>& out) const {
  size_t plain_start = 0, i = 0;
  const size_t n = text.size();
  while (i < n) {
    if (!first_byte_[static_cast<uint8_t>(text[i])]) {
      ++i;
      continue;
    }
    int32_t node = 0, best_id = -1;
    size_t best_len = 0;
    for (size_t j = i; j < n; ++j) {
      node = child(node, static_cast<uint8_t>(text[j]));
      if (node < 0) break;
      const Node& nd = nodes_[static_cast<size_t>(node)];
      if (nd.id >= 0 && (parse_special || !nd.control)) {
        best_id = nd.id;
        best_len = j - i + 1;
      }
    }
    if (best_id < 0) {
      ++i;
      continue;
    }
    if (i > plain_start) out.push_back({text.substr(plain_start, i - plain_start), -1, plain_start});
    out.push_back({text.substr(i, best_len), best_id, i});
    i += best_len;
    plain_start = i;
  }
  if (plain_start < n) out.push_back({text.substr(plain_start), -1, plain_start});
}

// --- TokenizerBase -------------------------------------------------------------------------------

TokenizerBase::TokenizerBase(const VocabData& v) : model_(v.model), tokens_(v.tokens) {
  const size_t n = tokens_.size();
  if (n == 0) throw Error("tokenizer.ggml.tokens is empty");
  if (n > static_cast<size_t>(INT32_MAX)) throw Error("tokenizer.ggml.tokens is too large");
  if (!v.types.empty() && v.types.size() != n)
    throw Error("tokenizer.ggml.token_type has " + std::to_string(v.types.size()) + " entries but there are " +
                std::to_string(n) + " tokens");
  if (!v.scores.empty() && v.scores.size() != n)
    throw Error("tokenizer.ggml.scores has " + std::to_string(v.scores.size()) + " entries but there are " +
                std::to_string(n) + " tokens");
  types_.resize(n, kNormal);
  for (size_t i = 0; i < n; ++i) {
    if (!v.types.empty()) types_[i] = v.types[i];
    else if (v.model == "llama" && looks_like_byte_token(tokens_[i])) types_[i] = kByte;
  }
  auto valid = [&](int32_t id) { return id >= 0 && static_cast<size_t>(id) < n ? id : -1; };
  bos_ = valid(v.bos);
  eos_ = valid(v.eos);
  unk_ = valid(v.unk);
  pad_ = valid(v.pad);
  add_bos_ = v.add_bos.value_or(v.model == "llama") && bos_ >= 0;

  eog_.assign(n, false);
  for (int32_t id : {eos_, valid(v.eot), valid(v.eom)})
    if (id >= 0) eog_[static_cast<size_t>(id)] = true;
  for (size_t i = 0; i < n; ++i) {
    if (types_[i] != kControl && types_[i] != kUserDefined) continue;
    for (const char* t : kEndOfGenerationTexts)
      if (tokens_[i] == t) eog_[i] = true;
  }
  special_.assign(n, false);
  for (size_t i = 0; i < n; ++i) special_[i] = types_[i] == kControl || types_[i] == kUnknown;
  for (int32_t id : {bos_, eos_, unk_, pad_})
    if (id >= 0) special_[static_cast<size_t>(id)] = true;
}

void TokenizerBase::check_id(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw Error("token id " + std::to_string(id) + " is out of range [0, " + std::to_string(vocab_size()) + ")");
}

bool TokenizerBase::is_end_of_generation(int32_t id) const {
  return id >= 0 && id < vocab_size() && eog_[static_cast<size_t>(id)];
}

bool TokenizerBase::is_control(int32_t id) const {
  return id >= 0 && id < vocab_size() && type_of(id) == kControl;
}

bool TokenizerBase::is_skipped_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && special_[static_cast<size_t>(id)];
}

const std::string& TokenizerBase::token_text(int32_t id) const {
  check_id(id);
  return tokens_[static_cast<size_t>(id)];
}

std::vector<int32_t> TokenizerBase::encode(std::string_view text, bool add_bos, bool parse_special) const {
  std::string clean;
  if (!utf8_is_valid(text)) {
    clean = utf8_sanitize(text);
    text = clean;
  }
  std::vector<SpecialMatcher::Piece> pieces;
  specials_.split(text, parse_special, pieces);
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  const bool starts_with_bos = !pieces.empty() && pieces[0].id >= 0 && pieces[0].id == bos_;
  if (add_bos && bos_ >= 0 && !starts_with_bos) out.push_back(bos_);
  for (const auto& p : pieces) {
    if (p.id >= 0) out.push_back(p.id);
    else encode_text(p.text, p.offset == 0, out);
  }
  return out;
}

std::string TokenizerBase::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string bytes;
  for (int32_t id : ids) {
    check_id(id);
    if (skip_special && special_[static_cast<size_t>(id)]) continue;
    bytes += token_bytes(id);
  }
  std::string text = utf8_sanitize(bytes);
  if (decode_strips_leading_space() && !text.empty() && text[0] == ' ') text.erase(0, 1);
  return text;
}

}  // namespace kvsqueeze::tok
