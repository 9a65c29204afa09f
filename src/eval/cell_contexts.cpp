#include "eval/cell_contexts.h"

#include "kvsqueeze/error.h"
#include "kvsqueeze/engine.h"

namespace kvsqueeze::eval {
namespace {

CompressionPlan plan_of(const EvalSettings& s, const GridCell& cell) {
  if (cell.press == "none") return {};
  return {.press = cell.press, .ratio = cell.ratio, .options = cell.options, .query_aware = s.query_aware, .policy = s.policy};
}

// Cells that cannot share a prefill: query-aware ones (compressed with each question) and those
// whose cache changes between chunks or while decoding (the plan's report says, the press's own
// decoding trigger included).
bool needs_own_prefill(const EvalSettings& s, const GridCell& cell) {
  if (cell.press == "none") return false;
  const PlanReport r = validate_plan(plan_of(s, cell));
  return r.query_aware || r.policy.every_chunk || r.policy.decoding();
}

// The bytes a shared group's copies hold at once: global presses a full copy until installed,
// the others about their share.
double copy_bytes(const Model& model, const EvalSettings& s, const GridCell& cell, int64_t n_context) {
  const ModelConfig& cfg = model.config();
  const double full = static_cast<double>(n_context) * static_cast<double>(cfg.n_layer * cfg.n_head_kv) *
                      static_cast<double>(kv_slot_bytes(s.session.kv_type_k, s.session.kv_type_v, cfg.head_dim_k, cfg.head_dim_v));
  if (cell.press == "none") return full;
  std::vector<std::string> opts = cell.options;
  const Budget budget = take_budget_options(cfg, s.session.kv_type_k, s.session.kv_type_v, cell.ratio, opts);
  return make_press_for_checks(cell.press, opts)->traits().needs_all_layers ? full : full * (1.0 - budget.ratio);
}

}  // namespace

void measure(const Model& model, const Accounting& held, int64_t tokens, InstalledCell& out) {
  out.context_tokens = tokens;
  out.kv_bytes_held = held.kv_bytes_held;
  out.kv_bytes_full = held.kv_bytes_full;
  int64_t kept = 0, full = 0;
  for (size_t l = 0; l < held.kv_lengths.size(); ++l) {
    if (model.config().layer_sliding[l]) continue;
    for (int64_t len : held.kv_lengths[l]) kept += len, full += tokens;
  }
  out.achieved_ratio = full > 0 ? 1.0 - static_cast<double>(kept) / static_cast<double>(full) : 0.0;
}

void for_each_cell(const Model& model, const EvalSettings& s, const std::vector<const GridCell*>& cells,
                   const std::vector<int32_t>& context, const std::function<void(InstalledCell&)>& use) {
  const auto n_context = static_cast<int64_t>(context.size());
  std::vector<const GridCell*> shared, own;
  for (const GridCell* c : cells) (needs_own_prefill(s, *c) ? own : shared).push_back(c);

  // The compressed copies of a shared prefill live side by side until each cell has run: cells
  // are grouped so that their estimated copies fit the grid's memory budget, one prefill per group.
  const double budget_bytes = static_cast<double>(s.grid_memory_mib) * 1048576.0;
  for (size_t first = 0; first < shared.size();) {
    std::vector<const GridCell*> group;
    double group_bytes = 0.0;
    for (; first < shared.size(); ++first) {
      const double bytes = copy_bytes(model, s, *shared[first], n_context);
      if (!group.empty() && group_bytes + bytes > budget_bytes) break;
      group_bytes += bytes;
      group.push_back(shared[first]);
    }
    std::vector<CompressionPlan> plans;
    for (const GridCell* c : group) plans.push_back(plan_of(s, *c));
    Engine engine(model, s.session);
    const auto prefill = engine.prefill_shared(context, plans);
    double compress_total = 0.0;
    for (size_t i = 0; i < group.size(); ++i) compress_total += prefill->compress_ms(i);
    for (size_t i = 0; i < group.size(); ++i) {
      if (!prefill->shared(i)) {  // compressed between chunks on its own trigger: run it alone
        own.push_back(group[i]);
        continue;
      }
      InstalledCell ic;
      ic.cell = group[i];
      ic.engine = &engine;
      ic.shared_prefill = true;
      // Measured without room for the question and the answer: what the compressed context holds.
      ic.own_budget = engine.use_shared(*prefill, i, 0).own_budget;
      // The shared pass's own time (the forward pass, without any cell's compression work).
      ic.prefill_ms = prefill->prefill_ms() - compress_total;
      ic.compress_ms = engine.context_ms() - prefill->prefill_ms();
      measure(model, engine.accounting(), n_context, ic);
      use(ic);
    }
  }

  for (const GridCell* c : own) {
    Engine engine(model, s.session);
    InstalledCell ic;
    ic.cell = c;
    ic.engine = &engine;
    const PlanReport& report = engine.set_plan(plan_of(s, *c));
    ic.query_aware = report.query_aware;
    ic.own_budget = report.own_budget;
    ic.prefill_ms = engine.prefill_context(context, 0);  // prefill and compression together
    measure(model, engine.accounting(), n_context, ic);  // query-aware: the uncompressed context
    use(ic);
  }
}

}  // namespace kvsqueeze::eval
