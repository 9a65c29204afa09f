#include "task_text.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>

namespace kvsqueeze::eval {

int64_t count_tokens(const Tokenizer& tokenizer, std::string_view text) {
  return static_cast<int64_t>(tokenizer.encode(text, /*add_bos=*/false, /*parse_special=*/false).size());
}

namespace {

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }
bool is_closer(char c) { return c == '\'' || c == '"' || c == ')' || c == ']'; }

// "Mr." and friends end no sentence (NLTK's Punkt learns these; a short fixed list does here).
bool ends_with_abbreviation(std::string_view text, size_t dot) {
  static const std::array<std::string_view, 12> abbreviations = {"Mr", "Mrs", "Ms", "Dr", "St", "Jr", "Sr", "vs",
                                                                  "etc", "e.g", "i.e", "Prof"};
  size_t start = dot;
  while (start > 0 && !is_space(text[start - 1]) && text[start - 1] != '(' && text[start - 1] != '\'' &&
         text[start - 1] != '"')
    --start;
  const std::string_view word = text.substr(start, dot - start);
  return std::find(abbreviations.begin(), abbreviations.end(), word) != abbreviations.end();
}

}  // namespace

std::vector<size_t> sentence_ends(std::string_view text) {
  std::vector<size_t> ends;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c != '.' && c != '!' && c != '?') continue;
    if (c == '.' && ends_with_abbreviation(text, i)) continue;
    size_t end = i + 1;
    while (end < text.size() && (is_closer(text[end]) || text[end] == '.' || text[end] == '!' || text[end] == '?'))
      ++end;
    if (end >= text.size()) {
      ends.push_back(end);
      break;
    }
    if (!is_space(text[end])) continue;
    size_t next = end;
    while (next < text.size() && is_space(text[next])) ++next;
    if (next < text.size() && std::islower(static_cast<unsigned char>(text[next]))) continue;
    ends.push_back(end);
    i = end - 1;
  }
  return ends;
}

std::vector<std::string> split_sentences(std::string_view text) {
  std::vector<std::string> sentences;
  size_t start = 0;
  auto push = [&](size_t from, size_t to) {
    while (from < to && is_space(text[from])) ++from;
    while (to > from && is_space(text[to - 1])) --to;
    if (to > from) sentences.emplace_back(text.substr(from, to - from));
  };
  for (size_t end : sentence_ends(text)) {
    push(start, end);
    start = end;
  }
  push(start, text.size());
  return sentences;
}

std::vector<std::string> split_words(std::string_view text) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_space(text[i])) ++i;
    const size_t start = i;
    while (i < text.size() && !is_space(text[i])) ++i;
    if (i > start) words.emplace_back(text.substr(start, i - start));
  }
  return words;
}

std::string join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  size_t total = 0;
  for (const auto& part : parts) total += part.size() + separator.size();
  out.reserve(total);
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += separator;
    out += parts[i];
  }
  return out;
}

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  if (from.empty()) return text;
  size_t pos = 0;
  while ((pos = text.find(from, pos)) != std::string::npos) {
    text.replace(pos, from.size(), to);
    pos += to.size();
  }
  return text;
}

std::string format_number(double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%g", value);
  return buffer;
}

int64_t fit_units(const std::function<int64_t(int64_t)>& tokens_for, int64_t budget, int64_t increment,
                  int64_t max_units) {
  // Invariant: lo fits (lo == 0 means nothing known to fit), hi does not (hi > max_units: unknown).
  int64_t lo = 0, lo_tokens = 0, hi = max_units + 1, hi_tokens = -1;
  int64_t prev = 0, prev_tokens = 0;  // an earlier fitting point, for the slope
  auto probe = [&](int64_t n) {
    const int64_t tokens = tokens_for(n);
    if (tokens <= budget) {
      prev = lo, prev_tokens = lo_tokens;
      lo = n, lo_tokens = tokens;
    } else {
      hi = n, hi_tokens = tokens;
    }
  };
  probe(std::clamp<int64_t>(increment, 1, max_units));
  if (lo == 0) {
    if (hi > 1) probe(1);
    if (lo == 0) return 0;
  }
  for (int step = 0; hi - lo > 1 && step < 200; ++step) {
    int64_t guess;
    if (hi_tokens < 0) {
      // No upper bracket yet: extrapolate from the slope, aiming a little high to get one.
      const double slope = prev > 0 ? double(lo_tokens - prev_tokens) / double(lo - prev) : double(lo_tokens) / double(lo);
      const double estimate = double(lo) + double(budget - lo_tokens) / std::max(slope, 1e-9);
      guess = static_cast<int64_t>(std::min(estimate * 1.05 + 1.0, double(max_units)));
    } else if (step % 2 == 1) {
      guess = lo + (hi - lo) / 2;
    } else {
      const double fraction = double(budget - lo_tokens) / double(std::max<int64_t>(hi_tokens - lo_tokens, 1));
      guess = lo + static_cast<int64_t>(fraction * double(hi - lo));
    }
    probe(std::clamp<int64_t>(guess, lo + 1, hi - 1));
  }
  return lo;
}

}  // namespace kvsqueeze::eval
