#pragma once
// One evaluation item, shaped like kvpress's pipeline input: a context that compression
// applies to, a question appended after it (never compressed), an answer prefix after the
// chat template's generation prompt, the references and the metric that scores the answer.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvsqueeze::eval {

struct Sample {
  std::string task;           // "niah", "ruler/niah_single_1", "longbench/qasper", ...
  std::string id;             // unique within the task and stable across runs (the resume key)
  std::string context;        // what presses compress
  std::string question;       // appended to the context (kvpress: context + question in one user turn)
  std::string answer_prefix;  // appended after the generation prompt; the answer continues it
  std::vector<std::string> references;
  std::vector<std::string> all_classes;  // classification tasks (LongBench trec, lsht)
  std::string metric;         // a name from metric_names() (metrics.h)
  int64_t max_new_tokens = 32;
  bool first_line_only = false;  // LongBench trec/triviaqa/samsum/lsht: the answer is cut at its first line
  nlohmann::json meta = nlohmann::json::object();  // e.g. {"depth": 50, "length": 4096} for heat maps
};

}  // namespace kvsqueeze::eval
