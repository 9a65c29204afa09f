// score_answer: metric names to functions, with LongBench eval.py's max over references.
#include <algorithm>
#include <functional>
#include <map>

#include "eval/python_text.h"
#include "eval/rouge_score.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/metrics.h"

namespace kvsqueeze::eval {
namespace {

using PairMetric = std::function<double(const std::string&, const std::string&, const std::vector<std::string>&)>;

// LongBench metrics score one reference at a time; eval.py keeps the best, starting from 0.
const std::map<std::string, PairMetric>& per_reference_metrics() {
  static const std::map<std::string, PairMetric> metrics = {
      {"qa_f1", [](const auto& p, const auto& r, const auto&) { return qa_f1(p, r); }},
      {"rouge_l", [](const auto& p, const auto& r, const auto&) { return rouge_l(p, r); }},
      {"classification", [](const auto& p, const auto& r, const auto& c) { return classification_score(p, r, c); }},
      {"retrieval", [](const auto& p, const auto& r, const auto&) { return retrieval_score(p, r); }},
      {"retrieval_zh", [](const auto& p, const auto& r, const auto&) { return retrieval_zh_score(p, r); }},
      {"count", [](const auto& p, const auto& r, const auto&) { return count_score(p, r); }},
      {"code_sim", [](const auto& p, const auto& r, const auto&) { return code_sim_score(p, r); }},
      {"niah_rouge", [](const auto& p, const auto& r, const auto&) { return niah_rouge(p, r); }},
  };
  return metrics;
}

}  // namespace

double niah_rouge(const std::string& prediction, const std::string& needle) {
  // kvpress: Rouge().get_scores(needle.strip(), predicted_answer.strip()), i.e. the needle is the
  // hypothesis and the answer the reference. kvpress would raise on an empty answer; we score 0.
  const auto score = rouge_package_rouge_l(py::strip(needle), py::strip(prediction));
  return score ? score->f : 0.0;
}

std::vector<std::string> metric_names() {
  std::vector<std::string> names = {"string_match_all", "string_match_part"};
  for (const auto& [name, fn] : per_reference_metrics()) names.push_back(name);
  return names;
}

double score_answer(const std::string& metric, const std::string& prediction, const std::vector<std::string>& references,
                    const std::vector<std::string>& all_classes) {
  if (metric == "string_match_all") return string_match_all(prediction, references);
  if (metric == "string_match_part") return string_match_part(prediction, references);
  if (metric == "qa_f1_zh" || metric == "rouge_zh")
    throw Error("metric '" + metric + "' needs jieba segmentation, not supported (Chinese LongBench datasets "
                "multifieldqa_zh, dureader and vcsum)");
  const auto& metrics = per_reference_metrics();
  const auto found = metrics.find(metric);
  if (found == metrics.end()) {
    std::string valid;
    for (const auto& name : metric_names()) valid += (valid.empty() ? "" : ", ") + name;
    throw Error("unknown metric '" + metric + "'; valid: " + valid);
  }
  double best = 0.0;
  for (const auto& reference : references) best = std::max(best, found->second(prediction, reference, all_classes));
  return best;
}

double score_sample(const Sample& sample, const std::string& prediction) {
  const std::string answer = sample.first_line_only ? longbench_first_line(prediction) : prediction;
  return score_answer(sample.metric, answer, sample.references, sample.all_classes);
}

}  // namespace kvsqueeze::eval
