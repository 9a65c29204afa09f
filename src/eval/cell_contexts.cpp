#include "eval/cell_contexts.h"

#include <chrono>

#include "kvsqueeze/error.h"
#include "kvsqueeze/engine.h"
#include "runtime/stopwatch.h"

namespace kvsqueeze::eval {
namespace {

using Clock = std::chrono::steady_clock;

struct BuiltPress {
  std::unique_ptr<Press> press;  // null: no compression
  Budget budget;
};

BuiltPress build(const Model& model, const EvalSettings& s, const GridCell& cell, int64_t question_tokens) {
  if (cell.press == "none") return {};
  std::vector<std::string> opts = cell.options;
  const Budget budget = take_budget_options(model.config(), s.session.kv_type, cell.ratio, opts);
  for (const auto& o : question_length_options(cell.press, std::max<int64_t>(1, question_tokens))) opts.push_back(o);
  return {make_press(cell.press, opts), budget};
}

// Whether the cell decodes with compression: the grid's policy, or its press's own (pyramid_merge).
bool decodes(const Model& model, const EvalSettings& s, const GridCell& cell) {
  return effective_policy(s.policy, build(model, s, cell, 1).press.get()).decoding();
}

// Cells that cannot share a prefill: their cache changes between chunks or while decoding
// (then their runner must own the session and run the decoding steps token by token).
bool needs_own_prefill(const Model& model, const EvalSettings& s, const GridCell& cell) {
  if (cell.press == "none") return false;
  return s.policy.every_chunk || s.query_aware || expression_needs_question(cell.press) || decodes(model, s, cell);
}

void measure(const Model& model, const Session& session, int64_t context_tokens, InstalledCell& out) {
  const KvCache& cache = session.cache();
  out.context_tokens = context_tokens;
  out.kv_bytes_held = cache.bytes_held();
  out.kv_bytes_full = session.kv_bytes_full();
  int64_t kept = 0, full = 0;
  const auto lengths = cache.lengths();
  for (size_t l = 0; l < lengths.size(); ++l) {
    if (model.config().layer_sliding[l]) continue;
    for (int64_t len : lengths[l]) kept += len, full += context_tokens;
  }
  out.achieved_ratio = full > 0 ? 1.0 - static_cast<double>(kept) / static_cast<double>(full) : 0.0;
}

}  // namespace

void for_each_cell(const Model& model, const EvalSettings& s, const std::vector<const GridCell*>& cells,
                   const std::vector<int32_t>& context, const std::vector<int32_t>& question, int64_t slack,
                   const std::function<void(InstalledCell&)>& use) {
  const auto n_context = static_cast<int64_t>(context.size());
  std::vector<const GridCell*> shared, own;
  for (const GridCell* c : cells) (needs_own_prefill(model, s, *c) ? own : shared).push_back(c);

  // The compressed copies of a shared prefill live side by side until each cell has run: cells
  // are grouped so that their estimated copies fit the grid's memory budget, one prefill per group.
  const ModelConfig& cfg = model.config();
  const double full_bytes = static_cast<double>(n_context) * static_cast<double>(cfg.n_layer * cfg.n_head_kv) *
                            (static_cast<double>(cfg.head_dim_k + cfg.head_dim_v) * static_cast<double>(kv_type_bytes(s.session.kv_type)) + 4.0);
  const double budget_bytes = static_cast<double>(s.grid_memory_mib) * 1048576.0;
  for (size_t first = 0; first < shared.size();) {
    std::vector<const GridCell*> group;
    double group_bytes = 0.0;
    for (; first < shared.size(); ++first) {
      const BuiltPress bp = build(model, s, *shared[first], 0);
      // Global presses hold a full copy until installed; the others about their share.
      const double bytes = full_bytes * (bp.press && !bp.press->traits().needs_all_layers ? 1.0 - bp.budget.ratio : 1.0);
      if (!group.empty() && group_bytes + bytes > budget_bytes) break;
      group_bytes += bytes;
      group.push_back(shared[first]);
    }
    std::vector<CompressionPlan> plans;
    for (const GridCell* c : group) {
      CompressionPlan plan;
      if (c->press != "none") plan = {.press = c->press, .ratio = c->ratio, .options = c->options, .policy = s.policy};
      plans.push_back(plan);
    }
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
      ic.session = &engine.session();
      ic.shared_prefill = true;
      // Measured without slack (what the compressed context holds), then room for the question
      // and the answer.
      ic.own_budget = engine.use_shared(*prefill, i, 0).own_budget;
      // The shared pass's own time (the forward pass, without any cell's compression work).
      ic.prefill_ms = prefill->prefill_ms() - compress_total;
      ic.compress_ms = engine.context_ms() - prefill->prefill_ms();
      measure(model, engine.session(), n_context, ic);
      engine.session().reserve(slack);
      use(ic);
    }
  }

  for (const GridCell* c : own) {
    const bool query_aware = s.query_aware || expression_needs_question(c->press);
    BuiltPress bp = build(model, s, *c, static_cast<int64_t>(question.size()));
    Session session(model, s.session);
    InstalledCell ic;
    ic.cell = c;
    ic.session = &session;
    const auto t0 = Clock::now();
    std::unique_ptr<PressRunner> runner;
    if (query_aware) {
      if (question.empty()) throw Error("query-aware compression (" + c->press + ") needs a question; this evaluation has none");
      session.eval(context);
      runner = std::make_unique<PressRunner>(session, bp.press.get(), bp.budget, s.policy.decoding() ? bp.press.get() : nullptr, s.policy);
      runner->prefill(question, 0);
      ic.question_evaluated = true;
      measure(model, session, n_context + static_cast<int64_t>(question.size()), ic);
      session.reserve(slack);
    } else {
      runner = std::make_unique<PressRunner>(session, bp.press.get(), bp.budget, s.policy.decoding() ? bp.press.get() : nullptr, s.policy);
      runner->prefill(context, 0);
      measure(model, session, n_context, ic);
      session.reserve(slack);
    }
    ic.prefill_ms = ms_since(t0);  // prefill and compression together
    ic.own_budget = bp.press && bp.press->traits().own_budget;
    runner->start_decoding();
    // The runner decodes with the press on its own trigger when its method asks (pyramid_merge).
    if (effective_policy(s.policy, bp.press.get()).decoding()) ic.runner = runner.get();
    else runner.reset();
    use(ic);
  }
}

}  // namespace kvsqueeze::eval
