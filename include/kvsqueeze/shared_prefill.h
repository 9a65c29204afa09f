#pragma once
// One prefill serving many presses and budgets (evaluation grids, docs/METHODS.md §8).
//
// A prefill-time press does not change the forward pass that produced the cache: kvpress
// compresses each layer after its attention, and the layer's output was already computed over
// the full cache. So one prefill of a context can feed every (press, budget) cell: right after
// each layer's attention on the last chunk, the layer is copied once per cell and that copy is
// compressed by the cell's press, which observed every chunk with the statistics it asked for
// (exactly those: the shared pass computes their union and each press sees its own share).
// Presses that need every layer (global allocation, extra passes: kvzip) get a full copy and
// compress it in finish() when the context is installed in a session.
//
// Cells that cannot share a prefill: chunked-prefill compression (the cache each chunk attends
// to depends on the press), decoding-time compression (the cache the answer is decoded from
// changes as it is generated: decoding is per cell anyway, but the runner must own the session)
// and query-aware presses (finch: the question is part of the compressed prefill).
#include <cstdint>
#include <memory>
#include <vector>

#include "kvsqueeze/kv_cache.h"
#include "kvsqueeze/press.h"
#include "kvsqueeze/session.h"

namespace kvsqueeze {

struct PrefillCell {
  Press* press = nullptr;  // null: an uncompressed copy (the baseline)
  Budget budget;
};

// A compressed copy of a context, ready to be installed in a session.
struct CompressedContext {
  std::unique_ptr<KvCache> cache;
  double compress_ms = 0.0;   // this cell's observe + compress time (finish() is timed by install_context)
  bool pending_finish = false;  // the press compresses in finish(), at install_context
  // False when the press compressed between prefill chunks on its own trigger (LagKV with
  // chunks): the copy is not what its own prefill would give; run the cell separately.
  bool shareable = true;
};

// Evaluates `ids` in `session` (whose cache ends up holding the full context) and returns one
// compressed copy per cell. The session must be empty (next position 0) and have no layer hook.
std::vector<CompressedContext> shared_prefill(Session& session, const std::vector<int32_t>& ids,
                                              const std::vector<PrefillCell>& cells);

// Replaces the session's cache by `context` (the context's `next_position` and last logits),
// runs a pending finish(), sets the position the next token takes (key re-rotation), and frees
// all but `slack` slots per run. Returns the milliseconds finish() took.
double install_context(Session& session, CompressedContext& context, const PrefillCell& cell, int32_t next_position,
                       const std::vector<float>& last_logits, int64_t slack);

// The statistics `want` asks for, cut from `shared` computed for a superset request.
LayerStats stats_for(const LayerStats& shared, const StatsRequest& want);

}  // namespace kvsqueeze
