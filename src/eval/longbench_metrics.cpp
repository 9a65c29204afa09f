// LongBench's answer metrics as THUDM/LongBench LongBench/metrics.py computes them (function by
// function, quirks included); the Chinese variants that need jieba are refused in metric_registry.cpp.
#include <algorithm>
#include <map>
#include <string_view>

#include "eval/fuzz_ratio.h"
#include "eval/python_text.h"
#include "eval/rouge_score.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/metrics.h"
#include "tokenizer/utf8.h"

namespace kvsqueeze::eval {
namespace {

// Python receives decoded str; read ill-formed bytes as U+FFFD once, up front.
std::string as_text(const std::string& s) { return tok::utf8_is_valid(s) ? s : tok::utf8_sanitize(s); }

bool is_ascii_punctuation(char c) {
  static constexpr std::string_view kPunctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";  // string.punctuation
  return kPunctuation.find(c) != std::string_view::npos;
}

// re.sub(r"\b(a|an|the)\b", " ", text) with Unicode word boundaries.
std::string remove_articles(const std::string& text) {
  const std::u32string cps = py::code_points(text);
  std::u32string out;
  size_t p = 0;
  while (p < cps.size()) {
    const bool boundary_before = p == 0 || !py::is_word(cps[p - 1]);
    if (boundary_before && py::is_word(cps[p])) {
      size_t matched = 0;
      for (std::u32string_view article : {U"a", U"an", U"the"}) {  // the regex's alternation order
        const size_t end = p + article.size();
        if (end <= cps.size() && std::u32string_view(cps).substr(p, article.size()) == article &&
            (end == cps.size() || !py::is_word(cps[end]))) {
          matched = article.size();
          break;
        }
      }
      if (matched) {
        out.push_back(U' ');
        p += matched;
        continue;
      }
    }
    out.push_back(cps[p]);
    ++p;
  }
  return py::to_utf8(out);
}

// f1_score: multiset overlap of two token lists; 0 without overlap.
double token_f1(const std::vector<std::string>& prediction, const std::vector<std::string>& reference) {
  std::map<std::string, long> counts;
  for (const auto& t : prediction) ++counts[t];
  long same = 0;
  for (const auto& t : reference) {
    auto it = counts.find(t);
    if (it != counts.end() && it->second > 0) {
      --it->second;
      ++same;
    }
  }
  if (same == 0) return 0.0;
  const double precision = 1.0 * static_cast<double>(same) / static_cast<double>(prediction.size());
  const double recall = 1.0 * static_cast<double>(same) / static_cast<double>(reference.size());
  return (2 * precision * recall) / (precision + recall);
}

// re.findall(r"\d+", prediction): the fraction of numbers that equal `target`.
double fraction_of_numbers_equal(const std::string& prediction, const std::string& target) {
  const std::vector<std::string> numbers = py::find_digit_runs(prediction);
  if (numbers.empty()) return 0.0;
  const auto right = std::count(numbers.begin(), numbers.end(), target);
  return static_cast<double>(right) / static_cast<double>(numbers.size());
}

// re.findall(pattern_prefix + r"(\d+)", reference)[0]: the digits after the first occurrence of
// the prefix that is followed by at least one digit.
std::string first_id_after(const std::string& reference, std::string_view prefix, const char* metric) {
  const std::u32string cps = py::code_points(reference);
  const std::u32string pre = py::code_points(prefix);
  for (size_t p = 0; p + pre.size() <= cps.size(); ++p) {
    if (std::u32string_view(cps).substr(p, pre.size()) != pre) continue;
    size_t end = p + pre.size();
    while (end < cps.size() && py::is_decimal(cps[end])) ++end;
    if (end > p + pre.size()) return py::to_utf8(std::u32string_view(cps).substr(p + pre.size(), end - p - pre.size()));
  }
  // LongBench raises IndexError here; a clear error is the faithful equivalent.
  throw Error(std::string(metric) + ": the reference \"" + reference.substr(0, 80) + "\" has no \"" +
              std::string(prefix) + "N\" paragraph id");
}

}  // namespace

std::string normalize_answer(const std::string& s) {
  std::string lowered = py::lower(as_text(s));
  std::string no_punctuation;
  no_punctuation.reserve(lowered.size());
  for (char c : lowered)  // ASCII bytes never occur inside a multi-byte UTF-8 character
    if (!is_ascii_punctuation(c)) no_punctuation.push_back(c);
  return py::join(py::split_whitespace(remove_articles(no_punctuation)), " ");
}

double qa_f1(const std::string& prediction, const std::string& reference) {
  return token_f1(py::split_whitespace(normalize_answer(prediction)), py::split_whitespace(normalize_answer(reference)));
}

double rouge_l(const std::string& prediction, const std::string& reference) {
  // rouge_score: any exception of Rouge.get_scores scores 0.
  const auto score = rouge_package_rouge_l(as_text(prediction), as_text(reference));
  return score ? score->f : 0.0;
}

double classification_score(const std::string& prediction, const std::string& reference,
                            const std::vector<std::string>& all_classes) {
  const std::string pred = as_text(prediction), truth = as_text(reference);
  std::vector<std::string> matches;
  for (const auto& name : all_classes)
    if (pred.find(as_text(name)) != std::string::npos) matches.push_back(as_text(name));
  // The official loop removes from the list it iterates over, so the element after each removed
  // one is never examined; reproduced with an index that advances after every step.
  for (size_t i = 0; i < matches.size(); ++i) {
    const std::string term = matches[i];
    if (truth.find(term) != std::string::npos && term != truth)
      matches.erase(std::find(matches.begin(), matches.end(), term));  // list.remove: first equal element
  }
  if (std::find(matches.begin(), matches.end(), truth) == matches.end()) return 0.0;
  return 1.0 / static_cast<double>(matches.size());
}

double retrieval_score(const std::string& prediction, const std::string& reference) {
  const std::string id = first_id_after(as_text(reference), "Paragraph ", "retrieval");
  return fraction_of_numbers_equal(as_text(prediction), id);
}

double retrieval_zh_score(const std::string& prediction, const std::string& reference) {
  const std::string id = first_id_after(as_text(reference), "段落", "retrieval_zh");
  return fraction_of_numbers_equal(as_text(prediction), id);
}

double count_score(const std::string& prediction, const std::string& reference) {
  return fraction_of_numbers_equal(as_text(prediction), as_text(reference));
}

double code_sim_score(const std::string& prediction, const std::string& reference) {
  // The first line (after leading newlines) with no backtick, '#' or '//'; "" when there is none.
  std::string_view text = prediction;
  const size_t first = text.find_first_not_of('\n');
  text = first == std::string_view::npos ? std::string_view() : text.substr(first);
  std::string code_line;
  for (const std::string& line : py::split(text, "\n")) {
    if (line.find('`') == std::string::npos && line.find('#') == std::string::npos &&
        line.find("//") == std::string::npos) {
      code_line = line;
      break;
    }
  }
  return fuzz_ratio(as_text(code_line), as_text(reference)) / 100.0;
}

std::string longbench_first_line(const std::string& prediction) {
  // eval.py: prediction.lstrip('\n').split('\n')[0]
  const size_t first = prediction.find_first_not_of('\n');
  if (first == std::string::npos) return {};
  const size_t end = prediction.find('\n', first);
  return prediction.substr(first, end == std::string::npos ? std::string::npos : end - first);
}

}  // namespace kvsqueeze::eval
