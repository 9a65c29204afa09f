#pragma once
// Aggregation of results.jsonl into the summary tables (internal to the report).
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvsqueeze::eval {

// kld and ppl results carry a divergence, not an answer score: reported as is, lower is better.
bool is_divergence_kind(const std::string& kind);

// The label of a press configuration: the expression, then its options if any.
std::string press_label(const nlohmann::json& result);

// The ratio a result is reported at: 0 for the "none" baseline, else its "ratio".
double reported_ratio(const nlohmann::json& result);

struct SummaryRow {
  std::string kind, task, press;  // task: "mean over tasks" for a mean row
  double ratio = 0;               // "none" (the baseline): 0
  int64_t n = 0;                  // samples
  int64_t tasks = 1;              // tasks averaged (mean rows)
  double score = 0;               // mean score x100; divergence kinds: the mean as stored (kld: KL in nats)
  // Half-width of the 95% confidence interval of `score`: Student's t on the samples of a task
  // row (NaN below 2 samples); for a mean over tasks, 1.96 x the standard error of the mean of
  // independent task means, sqrt(sum se_t^2) / tasks (NaN when a task has fewer than 2 samples;
  // with one task, that task's t interval).
  double score_ci95 = 0;
  double kl = 0, top1 = 0, ppl_ratio = 0;  // means of metrics.kl, metrics.top1 (x100), metrics.ppl_ratio; NaN if absent
  double kv_held_mib = 0, achieved_ratio = 0;  // means; NaN if absent
  bool own_budget = false;  // some result says its press set its own size: plot it at achieved_ratio
};

struct Summary {
  std::vector<SummaryRow> rows;   // kind, task, press ("none" first), ratio
  std::vector<SummaryRow> means;  // per kind, press, ratio: the mean over tasks of the task means
};

// Throws kvsqueeze::Error for a result without kind, task, press, a numeric score, or a ratio.
Summary summarise(const std::vector<nlohmann::json>& results);
std::string summary_csv(const Summary& summary);
std::string summary_markdown(const Summary& summary);

}  // namespace kvsqueeze::eval
