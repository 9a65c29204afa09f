#include <algorithm>

#include "kvsqueeze/layer_stats.h"

namespace kvsqueeze {

StatsRequest union_of(const StatsRequest& a, const StatsRequest& b) {
  StatsRequest r;
  r.window_queries = std::max(a.window_queries, b.window_queries);
  r.window_every_chunk = a.window_every_chunk || b.window_every_chunk;
  r.column_sums = a.column_sums || b.column_sums;
  r.pre_rope_query_rows = std::max(a.pre_rope_query_rows, b.pre_rope_query_rows);
  r.hidden_states = a.hidden_states || b.hidden_states;
  r.token_ids = a.token_ids || b.token_ids;
  return r;
}

}  // namespace kvsqueeze
