#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"
#include "kvsqueeze/session.h"

namespace kvsqueeze {

void prefill_with_press(Session& session, const std::vector<int32_t>& ids, Press& press, const Budget& budget, int64_t slack) {
  if (!(budget.ratio >= 0.0 && budget.ratio < 1.0))
    throw Error("compression ratio must be in [0, 1) (the fraction removed), got " + std::to_string(budget.ratio));
  // The hook refers to locals: it must be gone when this returns, by error or not.
  struct Restore {
    Session& s;
    ~Restore() {
      s.set_layer_hook(nullptr);
      s.set_stats_request({});
    }
  } restore{session};
  session.set_stats_request(press.needs());
  const bool deferred = press.needs_all_layers();
  session.set_layer_hook([&](const LayerStats& st, KvCache& cache) {
    const LayerView view(session.model(), st.layer, cache, st);
    press.observe(view);
    if (st.last_chunk && !deferred) compress_layer(press, view, budget, cache);
  });
  session.eval(ids);
  if (deferred && (!budget.none() || press.own_budget())) {
    session.set_layer_hook(nullptr);
    press.finish(session, budget);
  }
  // Presses that renumbered the kept positions (key re-rotation) say where later tokens go.
  if (press.next_position() >= 0) session.set_next_position(static_cast<int32_t>(press.next_position()));
  session.cache().release_slack(slack);
}

}  // namespace kvsqueeze
