#include "kvsqueeze/shared_prefill.h"

#include <algorithm>
#include <chrono>

#include "backend/kv_storage.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/press_pipeline.h"
#include "runtime/stopwatch.h"

namespace kvsqueeze {
namespace {

void copy_layer(const KvCache& from, int64_t layer, KvCache& to) {
  for (int64_t h = 0; h < from.shape().n_head_kv; ++h)
    to.assign(layer, h, from.run(layer, h));
}

}  // namespace

LayerStats stats_for(const LayerStats& shared, const StatsRequest& want) {
  LayerStats s;
  s.layer = shared.layer;
  s.last_chunk = shared.last_chunk;
  s.positions = shared.positions;
  s.standalone = shared.standalone;
  // Each query's probabilities do not depend on how many queries were asked for: a smaller
  // window is the last rows of the larger one.
  const auto& a = shared.attention;
  if (want.window_queries > 0 && a.window_rows > 0) {
    const int64_t w = std::min(want.window_queries, a.window_rows);
    s.attention.window_rows = w;
    s.attention.window.resize(a.window.size());
    for (size_t h = 0; h < a.window.size(); ++h) {
      const auto len = static_cast<int64_t>(a.window[h].size()) / a.window_rows;
      s.attention.window[h].assign(a.window[h].end() - w * len, a.window[h].end());
    }
  }
  if (want.column_sums) s.attention.column_sums = a.column_sums;
  if (want.pre_rope_query_rows > 0 && shared.pre_rope_rows > 0) {
    const int64_t rows = std::min(want.pre_rope_query_rows, shared.pre_rope_rows);
    const auto width = static_cast<int64_t>(shared.pre_rope_queries.size()) / shared.pre_rope_rows;
    s.pre_rope_rows = rows;
    s.pre_rope_queries.assign(shared.pre_rope_queries.end() - rows * width, shared.pre_rope_queries.end());
  }
  if (want.hidden_states) s.hidden_states = shared.hidden_states;
  if (want.token_ids) s.tokens = shared.tokens;
  return s;
}

std::vector<CompressedContext> shared_prefill(Session& session, const std::vector<int32_t>& ids,
                                              const std::vector<PrefillCell>& cells) {
  if (session.next_position() != 0) throw Error("internal: shared_prefill needs an empty session");
  const Model& model = session.model();
  StatsRequest all;
  for (const auto& c : cells)
    if (c.press) all = union_of(all, c.press->needs());
  std::vector<CompressedContext> out(cells.size());
  for (auto& o : out) o.cache = std::make_unique<KvCache>(session.cache().storage().empty_like());  // on the session's device
  // Presses scoring while the context is evaluated (global_topk) learn the budget first.
  for (const auto& c : cells)
    if (c.press && c.press->traits().needs_all_layers) c.press->set_budget(c.budget);
  session.set_stats_request(all);
  session.set_layer_hook([&](const LayerStats& shared, KvCache& cache) {
    const int64_t l = shared.layer;
    for (size_t i = 0; i < cells.size(); ++i) {
      const PrefillCell& cell = cells[i];
      CompressedContext& ctx = out[i];
      if (!cell.press) {
        if (shared.last_chunk) copy_layer(cache, l, *ctx.cache);
        continue;
      }
      if (!ctx.shareable) continue;
      const auto t0 = std::chrono::steady_clock::now();
      const LayerStats own = stats_for(shared, cell.press->needs());
      const LayerView full_view(model, l, cache, own);
      cell.press->observe(full_view);
      const bool sliding = cache.window(l) > 0;
      if (!shared.last_chunk) {
        // A press compressing between chunks on its own trigger (LagKV) changes what later
        // chunks attend to: it needs a prefill of its own.
        if (!sliding && cell.press->triggers(full_view)) ctx.shareable = false;
      } else {
        copy_layer(cache, l, *ctx.cache);
        // The pipeline's rule (PressRunner): sliding-window layers are never compressed, and
        // presses that need every layer compress in finish().
        const LayerView view(model, l, *ctx.cache, own);
        if (!sliding && (cell.press->triggers(view) || !cell.press->traits().needs_all_layers))
          compress_layer(*cell.press, view, cell.budget, *ctx.cache);
        ctx.pending_finish = cell.press->traits().needs_all_layers && (!cell.budget.none() || cell.press->traits().own_budget);
      }
      ctx.compress_ms += ms_since(t0);
    }
  });
  try {
    session.eval(ids);
  } catch (...) {
    session.set_layer_hook(nullptr);
    session.set_stats_request({});
    throw;
  }
  session.set_layer_hook(nullptr);
  session.set_stats_request({});
  for (auto& o : out) o.cache->release_slack(0);
  return out;
}

double install_context(Session& session, CompressedContext& context, const PrefillCell& cell, int32_t next_position,
                       const std::vector<float>& last_logits, int64_t slack) {
  session.set_layer_hook(nullptr);
  session.set_stats_request({});
  session.restore(std::move(*context.cache), next_position, last_logits);
  context.cache.reset();
  double ms = 0.0;
  if (context.pending_finish && cell.press) {
    const auto t0 = std::chrono::steady_clock::now();
    finish_press(*cell.press, session, cell.budget);
    ms = ms_since(t0);
  }
  if (cell.press && cell.press->next_position() >= 0) session.set_next_position(static_cast<int32_t>(cell.press->next_position()));
  session.cache().release_slack(slack);
  return ms;
}

}  // namespace kvsqueeze
