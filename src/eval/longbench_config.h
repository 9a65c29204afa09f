#pragma once
// One LongBench dataset as the official scripts configure it (see longbench_config.cpp).
#include <cstdint>
#include <string>
#include <vector>

namespace kvsqueeze::eval {

struct LongBenchConfig {
  std::string name;
  std::string prompt_template;  // with "{context}" and (for most) "{input}", context first
  int64_t max_new_tokens;       // dataset2maxlen
  std::string metric;           // a metrics.h name; qa_f1_zh / rouge_zh need jieba
  bool first_line_only;         // eval.py cuts the answer at its first line
  bool chat_template;           // pred.py: false for few-shot and code datasets
};

// All 21 datasets, in dataset2prompt.json's order.
const std::vector<LongBenchConfig>& longbench_configs();

}  // namespace kvsqueeze::eval
