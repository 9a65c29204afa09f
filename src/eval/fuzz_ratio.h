#pragma once
// fuzzywuzzy 0.18 `fuzz.ratio` as LongBench runs it: without python-Levenshtein (neither
// LongBench's nor kvpress's requirements install it), fuzzywuzzy falls back to difflib's
// SequenceMatcher, whose matching-block heuristic (with autojunk) is not an optimal alignment.
#include <string>

namespace kvsqueeze::eval {

// difflib.SequenceMatcher(None, a, b).ratio() over code points: 2*M/T, 1.0 when both are empty.
double sequence_matcher_ratio(const std::u32string& a, const std::u32string& b);

// fuzz.ratio(a, b): 100 if equal, 0 if either is empty, else int(round(100 * ratio)) with
// Python's round-half-to-even.
int fuzz_ratio(const std::string& a, const std::string& b);

}  // namespace kvsqueeze::eval
