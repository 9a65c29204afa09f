// Validation of a compression plan, once, before any model work: the same checks for every
// front end (CLI flags, Python arguments, HTTP fields), each naming the plan's field.
#include <cstdio>
#include <string>
#include <utility>

#include "engine/plan_presses.h"
#include "kvsqueeze/engine.h"

namespace kvsqueeze {
namespace {

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// A press built from an expression (make_press_for_checks); errors keep their message and name
// the field they came from.
std::unique_ptr<Press> build(const std::string& field, const std::string& expression, std::vector<std::string> options) {
  try {
    return make_press_for_checks(expression, std::move(options));
  } catch (const ParameterError&) {
    throw;
  } catch (const Error& e) {
    throw ParameterError(field, e.what());
  }
}

}  // namespace

PlanPresses build_plan_presses(const CompressionPlan& plan, const ModelConfig& config, KvType k_type, KvType v_type,
                               PlanReport* report) {
  if (!(plan.ratio >= 0.0 && plan.ratio < 1.0))
    throw ParameterError("ratio", "`ratio` must be in [0, 1) (the fraction removed), got " + number(plan.ratio));
  plan.policy.validate();
  PlanPresses out;
  PlanReport r;
  r.press = plan.press;
  r.ratio = plan.ratio;
  std::vector<std::string> rest = plan.options;
  if (plan.press == "none") {
    if (plan.ratio != 0.0) throw ParameterError("ratio", "`ratio` " + number(plan.ratio) + " needs a press; press 'none' compresses nothing");
    if (!plan.options.empty()) throw ParameterError("options", "press 'none' has no options (got `options` " + plan.options[0] + ")");
  } else {
    out.budget = take_budget_options(config, k_type, v_type, plan.ratio, rest);
    out.press = build("press", plan.press, rest);
    out.press_options = rest;
    r.compresses = true;
    r.own_budget = out.press->traits().own_budget;
    r.budget_tokens = out.budget.tokens;
  }
  for (const auto& o : plan.options)
    if (o.rfind("budget_bytes=", 0) == 0) r.budget_bytes = static_cast<int64_t>(std::stod(o.substr(13)));
  // Presses that score the context by the question's attention (Finch) only exist query-aware.
  r.query_aware = plan.query_aware || (out.press && expression_needs_question(plan.press));
  if (r.query_aware && !out.press) throw ParameterError("query_aware", "`query_aware` needs a press (`press` NAME `ratio` R)");
  if (plan.decode_press.empty() && !plan.decode_options.empty())
    throw ParameterError("decode_options", "`decode_options` needs `decode_press`");
  if (plan.policy.every_chunk && !out.press) throw ParameterError("every_chunk", "`every_chunk` needs a press (`press` NAME `ratio` R)");
  // A decode press compresses on its own trigger (LagKV) and/or every decode_interval steps; a
  // press whose method compresses while decoding (pyramid_merge) does so without being asked.
  CompressionPolicy policy = plan.policy;
  policy.decode_triggers = !plan.decode_press.empty();
  policy = effective_policy(policy, out.press.get());
  // The same expression as the press shares that press (and its state, e.g. LagKV's compressed prefix).
  const bool same = !plan.decode_press.empty() && plan.decode_press == plan.press && plan.decode_options.empty();
  if (!plan.decode_press.empty() && !same) out.own_decode_press = build("decode_press", plan.decode_press, plan.decode_options);
  out.decode_press = out.own_decode_press ? out.own_decode_press.get() : out.press.get();
  if (policy.decoding() && !out.decode_press)
    throw ParameterError("decode_interval", "`decode_interval` needs a press: `decode_press` NAME (or `press` NAME)");
  r.policy = policy;
  r.decode_press = policy.decoding() ? (plan.decode_press.empty() ? plan.press : plan.decode_press) : "none";
  if (report) *report = r;
  return out;
}

PlanReport validate_plan(const CompressionPlan& plan) {
  ModelConfig any;  // budget options are only split off here; their values are checked against a model later
  any.layer_sliding = {false};
  any.head_dim_k = any.head_dim_v = any.n_head_kv = 1;
  PlanReport r;
  build_plan_presses(plan, any, KvType::F16, KvType::F16, &r);
  r.budget_tokens = -1;  // in slots of the model it runs on
  for (const auto& o : plan.options)
    if (o.rfind("budget=", 0) == 0) r.budget_tokens = static_cast<int64_t>(std::stod(o.substr(7)));
  return r;
}

}  // namespace kvsqueeze
