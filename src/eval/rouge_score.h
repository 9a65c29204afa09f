#pragma once
// ROUGE-L as the `rouge` PyPI package (pltrdy/rouge 1.0.1) computes it in
// Rouge().get_scores(hyp, ref): summary-level LCS over sentences split at '.', with its
// whitespace handling, set-based ("exclusive") word counts and its own F formula.
#include <optional>
#include <string>

namespace kvsqueeze::eval {

struct RougeLScore {
  double f = 0, p = 0, r = 0;
};

// nullopt where the package raises ValueError: the hypothesis or the reference has no sentence
// (empty, or nothing but dots). Not reproduced: Python's RecursionError in the package's recursive
// LCS walk, reached only by one sentence pair over ~1000 words in total.
std::optional<RougeLScore> rouge_package_rouge_l(const std::string& hypothesis, const std::string& reference);

}  // namespace kvsqueeze::eval
