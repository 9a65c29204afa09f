#include "kvsqueeze/tokenizer.h"

#include "kvsqueeze/gguf.h"
#include "tokenizer/utf8.h"
#include "tokenizer/vocab.h"

namespace kvsqueeze {

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GgufFile& file) {
  return tok::build_tokenizer(tok::read_vocab(file));
}

std::string StreamingDetokenizer::feed(int32_t id) {
  if (skip_special_ && tokenizer_.is_skipped_special(id)) return {};
  std::string bytes = tokenizer_.token_bytes(id);
  if (at_start_ && !bytes.empty()) {
    if (tokenizer_.decode_strips_leading_space() && bytes[0] == ' ') bytes.erase(0, 1);
    at_start_ = false;
  }
  pending_ += bytes;
  // Everything but an unfinished character at the end can be emitted; ill-formed bytes before it
  // are final, so they are replaced exactly as decode() replaces them.
  const size_t keep = tok::utf8_incomplete_tail(pending_);
  const size_t ready = pending_.size() - keep;
  if (ready == 0) return {};
  std::string out = tok::utf8_sanitize(std::string_view(pending_).substr(0, ready));
  pending_.erase(0, ready);
  return out;
}

std::string StreamingDetokenizer::flush() {
  std::string out = tok::utf8_sanitize(pending_);
  pending_.clear();
  return out;
}

}  // namespace kvsqueeze
