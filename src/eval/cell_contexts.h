#pragma once
// Puts a context into a session once per grid cell, compressed as the cell says: shared-prefill
// cells from one prefill, the others (chunked-prefill, decoding-time, query-aware compression,
// chunk-triggered presses) each with a prefill of its own. Internal to the evaluation runner.
#include <functional>
#include <memory>
#include <vector>

#include "kvsqueeze/eval/runner.h"
#include "kvsqueeze/engine.h"

namespace kvsqueeze::eval {

struct InstalledCell {
  const GridCell* cell = nullptr;
  Engine* engine = nullptr;  // holds the context, compressed as the cell's plan says
  bool query_aware = false;  // the context is compressed with the question, by Engine::answer
  bool shared_prefill = false;
  double prefill_ms = 0.0, compress_ms = 0.0;
  int64_t context_tokens = 0;
  size_t kv_bytes_held = 0, kv_bytes_full = 0;  // right after compression, before any question
  double achieved_ratio = 0.0;                  // 1 - slots kept / slots of the full context (full-attention layers)
  bool own_budget = false;  // the press sets its own size (pyramid_merge, per_layer): the grid's ratio is nominal
};

// Sets the cell's bytes and achieved ratio from what the cache held over `tokens` positions.
void measure(const Model& model, const Accounting& held, int64_t tokens, InstalledCell& out);

// Calls `use` once per cell, in order, with the context installed in the cell's engine.
void for_each_cell(const Model& model, const EvalSettings& settings, const std::vector<const GridCell*>& cells,
                   const std::vector<int32_t>& context, const std::function<void(InstalledCell&)>& use);

}  // namespace kvsqueeze::eval
