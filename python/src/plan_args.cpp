#include "plan_args.h"

#include <nanobind/stl/string.h>

namespace nb = nanobind;

namespace kvsqueeze::python {

CompressionPlan make_plan(const std::string& press, double ratio, const std::vector<std::string>& options, bool query_aware,
                          bool every_chunk, int64_t decode_interval, int64_t decode_target, double decode_ratio,
                          const std::string& decode_press, const std::vector<std::string>& decode_options) {
  CompressionPlan plan;
  plan.press = press;
  plan.ratio = ratio;
  plan.options = options;
  plan.query_aware = query_aware;
  plan.policy.every_chunk = every_chunk;
  plan.policy.decode_interval = decode_interval;
  plan.policy.decode_target = decode_target;
  plan.policy.decode_ratio = decode_ratio;
  plan.decode_press = decode_press;
  plan.decode_options = decode_options;
  return plan;
}

nb::dict report_dict(const PlanReport& r) {
  nb::dict d;
  d["press"] = r.press;
  d["ratio"] = r.ratio;
  d["compresses"] = r.compresses;
  d["query_aware"] = r.query_aware;
  d["own_budget"] = r.own_budget;
  d["budget_tokens"] = r.budget_tokens;
  d["budget_bytes"] = r.budget_bytes;
  d["every_chunk"] = r.policy.every_chunk;
  d["decode_interval"] = r.policy.decode_interval;
  d["decode_target"] = r.policy.decode_target;
  d["decode_ratio"] = r.policy.decode_ratio;
  d["decode_press"] = r.decode_press;
  return d;
}

}  // namespace kvsqueeze::python
