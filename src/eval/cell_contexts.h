#pragma once
// Puts a context into a session once per grid cell, compressed as the cell says: shared-prefill
// cells from one prefill, the others (chunked-prefill, decoding-time, query-aware compression,
// chunk-triggered presses) each with a prefill of its own. Internal to the evaluation runner.
#include <functional>
#include <memory>
#include <vector>

#include "kvsqueeze/eval/runner.h"
#include "kvsqueeze/press_pipeline.h"

namespace kvsqueeze::eval {

struct InstalledCell {
  const GridCell* cell = nullptr;
  Session* session = nullptr;
  PressRunner* runner = nullptr;   // decoding-time compression: already in decoding mode
  bool question_evaluated = false;  // query-aware: the question is in the cache, compressed with the context
  bool shared_prefill = false;
  double prefill_ms = 0.0, compress_ms = 0.0;
  int64_t context_tokens = 0;
  size_t kv_bytes_held = 0, kv_bytes_full = 0;  // right after compression, before any question
  double achieved_ratio = 0.0;                  // 1 - slots kept / slots of the full context (full-attention layers)
  bool own_budget = false;  // the press sets its own size (pyramid_merge, per_layer): the grid's ratio is nominal
};

// Calls `use` once per cell, in order, with the context installed (`question` only matters to
// query-aware cells; `slack` is the room left per run for the question and the answer).
void for_each_cell(const Model& model, const EvalSettings& settings, const std::vector<const GridCell*>& cells,
                   const std::vector<int32_t>& context, const std::vector<int32_t>& question, int64_t slack,
                   const std::function<void(InstalledCell&)>& use);

}  // namespace kvsqueeze::eval
