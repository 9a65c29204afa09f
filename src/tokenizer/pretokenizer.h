#pragma once
// Regex pre-tokenizers for byte-level BPE, selected by tokenizer.ggml.pre. Built on PCRE2 (UTF +
// Unicode properties, JIT when available) so \p{L}, \p{N}, lookahead and (?i:...) behave as in
// the Oniguruma regexes HF tokenizers runs.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvsqueeze::tok {

// One compiled pattern. split() cuts text the way HF's Split(pattern, behavior="isolated") does:
// every match is a piece, and so is every stretch of text between matches.
class SplitRegex {
 public:
  explicit SplitRegex(const std::string& pattern);  // throws kvsqueeze::Error on a bad pattern
  ~SplitRegex();
  SplitRegex(const SplitRegex&) = delete;
  SplitRegex& operator=(const SplitRegex&) = delete;

  // Appends the pieces of text to out. text must be valid UTF-8.
  void split(std::string_view text, std::vector<std::string_view>& out) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*
};

// A sequence of split stages; each stage re-splits every piece the previous one produced.
class PreTokenizer {
 public:
  // Throws kvsqueeze::Error naming the supported names when pre is unknown.
  static std::unique_ptr<PreTokenizer> for_name(const std::string& pre);
  static std::vector<std::string> names();  // every accepted tokenizer.ggml.pre value

  const std::string& name() const { return name_; }
  void split(std::string_view text, std::vector<std::string_view>& out) const;

 private:
  std::string name_;
  std::vector<std::unique_ptr<SplitRegex>> stages_;
};

}  // namespace kvsqueeze::tok
