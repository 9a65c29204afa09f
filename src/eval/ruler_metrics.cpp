// RULER's string matching (NVIDIA/RULER scripts/eval/synthetic/constants.py), with the
// prediction cleaned as kvpress's evaluation/benchmarks/ruler/calculate_metrics.py cleans it:
// strip, delete control characters U+0000..U+001F, strip again. (RULER's own evaluate.py
// replaces them with '\n' instead; kvpress is the reference for the published numbers we compare.)
#include "eval/python_text.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/metrics.h"
#include "tokenizer/utf8.h"

namespace kvsqueeze::eval {
namespace {

std::string cleaned_lower_prediction(const std::string& prediction) {
  const std::string text = tok::utf8_is_valid(prediction) ? prediction : tok::utf8_sanitize(prediction);
  std::string without_controls;
  for (char c : py::strip(text))
    if (static_cast<unsigned char>(c) >= 0x20) without_controls.push_back(c);
  return py::lower(py::strip(without_controls));
}

bool contains_lowered(const std::string& lowered_prediction, const std::string& reference) {
  return lowered_prediction.find(py::lower(reference)) != std::string::npos;
}

}  // namespace

double string_match_all(const std::string& prediction, const std::vector<std::string>& references) {
  if (references.empty()) throw Error("string_match_all: the sample has no references");
  const std::string lowered = cleaned_lower_prediction(prediction);
  double found = 0;
  for (const auto& r : references) found += contains_lowered(lowered, r) ? 1.0 : 0.0;
  return found / static_cast<double>(references.size());
}

double string_match_part(const std::string& prediction, const std::vector<std::string>& references) {
  if (references.empty()) throw Error("string_match_part: the sample has no references");
  const std::string lowered = cleaned_lower_prediction(prediction);
  for (const auto& r : references)
    if (contains_lowered(lowered, r)) return 1.0;
  return 0.0;
}

}  // namespace kvsqueeze::eval
