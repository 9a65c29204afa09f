#pragma once
// CompressionPlan from Python keyword arguments, and PlanReport as a dict: shared by
// Engine.set_plan and validate_plan.
#include <nanobind/nanobind.h>

#include <string>
#include <vector>

#include "kvsqueeze/engine.h"

namespace kvsqueeze::python {

CompressionPlan make_plan(const std::string& press, double ratio, const std::vector<std::string>& options, bool query_aware,
                          bool every_chunk, int64_t decode_interval, int64_t decode_target, double decode_ratio,
                          const std::string& decode_press, const std::vector<std::string>& decode_options);
nanobind::dict report_dict(const PlanReport& report);

}  // namespace kvsqueeze::python

// The keyword arguments of make_plan, with CompressionPlan's defaults (inside bind functions).
#define KVSQ_PLAN_ARGS                                                                                             \
  "press"_a = "none", "ratio"_a = 0.0, "options"_a = std::vector<std::string>{}, "query_aware"_a = false,           \
  "every_chunk"_a = false, "decode_interval"_a = 0, "decode_target"_a = 0, "decode_ratio"_a = 0.0, "decode_press"_a = "", \
  "decode_options"_a = std::vector<std::string>{}
