#pragma once
// Text helpers shared by the task generators: token counting, sentence and word splitting, and
// the search for the largest haystack that keeps a prompt within its token budget.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "kvsqueeze/tokenizer.h"

namespace kvsqueeze::eval {

// Tokens of `text` as the prompt's body: no BOS, special-looking text kept literal (RULER counts
// with tokenizer.tokenize, kvpress with add_special_tokens=False).
int64_t count_tokens(const Tokenizer& tokenizer, std::string_view text);

// Sentences of a whitespace-normalised text, in the spirit of NLTK's sent_tokenize (which RULER
// uses): a sentence ends at . ! or ? (closing quotes and brackets included) followed by
// whitespace and a character that is not a lower-case letter; common abbreviations do not end one.
std::vector<std::string> split_sentences(std::string_view text);
// Offsets just past each sentence end of `text` (the same rule), ascending.
std::vector<size_t> sentence_ends(std::string_view text);
// Words separated by whitespace (Python's re.sub(r"\s+", " ", text).split(" ") without empties).
std::vector<std::string> split_words(std::string_view text);

std::string join(const std::vector<std::string>& parts, std::string_view separator);
std::string replace_all(std::string text, std::string_view from, std::string_view to);
// "50", "12.5": a number as Python's "%g" writes it, for stable sample ids.
std::string format_number(double value);

// The largest n in [1, max_units] with tokens_for(n) <= budget, searched as RULER does (a probe at
// `increment` units, then a bracketed search) but with interpolation, since the token count grows
// almost linearly with n. Returns 0 when even one unit is over budget.
int64_t fit_units(const std::function<int64_t(int64_t)>& tokens_for, int64_t budget, int64_t increment,
                  int64_t max_units);

}  // namespace kvsqueeze::eval
