#include "eval/rouge_score.h"

#include <algorithm>
#include <set>
#include <vector>

#include "eval/python_text.h"

namespace kvsqueeze::eval {
namespace {

// Rouge._get_scores: split at '.', keep the pieces that are non-empty BEFORE whitespace is
// normalised (so "a. . b" keeps an empty sentence), then collapse whitespace runs to one space.
std::vector<std::string> package_sentences(const std::string& text) {
  std::vector<std::string> sentences;
  for (const std::string& piece : py::split(text, ".")) {
    if (piece.empty()) continue;
    sentences.push_back(py::join(py::split_whitespace(piece), " "));
  }
  return sentences;
}

// _split_into_words: str.split(" ") of a normalised sentence; "" gives one empty word.
std::vector<std::string> sentence_words(const std::string& sentence) { return py::split(sentence, " "); }

// _recon_lcs(x, y): the words of one LCS of x and y, found by the package's walk back through the
// DP table (match -> diagonal; else up when table[i-1][j] > table[i][j-1]; else left), as a set.
void add_lcs_words(const std::vector<std::string>& x, const std::vector<std::string>& y, std::set<std::string>& out) {
  const size_t n = x.size(), m = y.size();
  std::vector<std::vector<int>> table(n + 1, std::vector<int>(m + 1, 0));
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= m; ++j)
      table[i][j] = x[i - 1] == y[j - 1] ? table[i - 1][j - 1] + 1 : std::max(table[i - 1][j], table[i][j - 1]);
  size_t i = n, j = m;
  while (i > 0 && j > 0) {
    if (x[i - 1] == y[j - 1]) {
      out.insert(x[i - 1]);
      --i;
      --j;
    } else if (table[i - 1][j] > table[i][j - 1]) {
      --i;
    } else {
      --j;
    }
  }
}

}  // namespace

std::optional<RougeLScore> rouge_package_rouge_l(const std::string& hypothesis, const std::string& reference) {
  const std::vector<std::string> hyp = package_sentences(hypothesis);
  const std::vector<std::string> ref = package_sentences(reference);
  if (hyp.empty() || ref.empty()) return std::nullopt;  // "Collections must contain at least 1 sentence."

  std::set<std::string> ref_vocabulary, hyp_vocabulary;
  std::vector<std::vector<std::string>> hyp_words;
  for (const std::string& s : ref)
    for (std::string& w : sentence_words(s)) ref_vocabulary.insert(std::move(w));
  for (const std::string& s : hyp) {
    hyp_words.push_back(sentence_words(s));
    hyp_vocabulary.insert(hyp_words.back().begin(), hyp_words.back().end());
  }

  // rouge_l_summary_level: the summed per-reference-sentence growth of one union set is the size
  // of the final union of every (reference sentence, hypothesis sentence) LCS word set.
  std::set<std::string> lcs_union;
  for (const std::string& s : ref) {
    const std::vector<std::string> ref_words = sentence_words(s);
    for (const auto& words : hyp_words) add_lcs_words(ref_words, words, lcs_union);
  }

  const double llcs = static_cast<double>(lcs_union.size());
  RougeLScore score;
  score.r = llcs / static_cast<double>(ref_vocabulary.size());
  score.p = llcs / static_cast<double>(hyp_vocabulary.size());
  score.f = 2.0 * ((score.p * score.r) / (score.p + score.r + 1e-8));  // the package's formula, epsilon included
  return score;
}

}  // namespace kvsqueeze::eval
