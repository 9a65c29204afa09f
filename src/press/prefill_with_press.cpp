#include "kvsqueeze/press.h"
#include "kvsqueeze/session.h"

namespace kvsqueeze {

void prefill_with_press(Session& session, const std::vector<int32_t>& ids, Press& press, double ratio, int64_t slack) {
  // The hook refers to locals: it must be gone when this returns, by error or not.
  struct Restore {
    Session& s;
    ~Restore() {
      s.set_layer_hook(nullptr);
      s.set_stats_request({});
    }
  } restore{session};
  session.set_stats_request(press.needs());
  session.set_layer_hook([&](const LayerStats& st, KvCache& cache) {
    const LayerView view{session.model().config(), st.layer, cache, st};
    press.observe(view);
    if (st.last_chunk) compress_layer(press, view, ratio, cache);
  });
  session.eval(ids);
  session.cache().release_slack(slack);
}

}  // namespace kvsqueeze
