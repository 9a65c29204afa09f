#pragma once
// The press objects a validated plan runs with (private to the engine).
#include <memory>
#include <string>
#include <vector>

#include "kvsqueeze/engine.h"
#include "kvsqueeze/press.h"

namespace kvsqueeze {

struct PlanPresses {
  std::unique_ptr<Press> press;             // null: no compression of the context
  std::unique_ptr<Press> own_decode_press;  // a decode press other than `press`
  Press* decode_press = nullptr;            // own_decode_press, or press
  Budget budget;
  std::vector<std::string> press_options;   // the plan's options without the budget ones
};

// Builds (and so validates) the plan's presses for a model; throws ParameterError naming the field.
PlanPresses build_plan_presses(const CompressionPlan& plan, const ModelConfig& config, KvType k_type, KvType v_type,
                               PlanReport* report);

}  // namespace kvsqueeze
