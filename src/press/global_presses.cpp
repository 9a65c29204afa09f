#include "press/global_presses.h"

#include "kvsqueeze/error.h"
#include "kvsqueeze/session.h"

namespace kvsqueeze {

int32_t ContextPassPress::context_end(const Session& session) const {
  if (ids_.empty() || first_pos_ < 0) throw Error(name() + ": the context was not observed (needs token ids)");
  const int32_t end = first_pos_ + static_cast<int32_t>(ids_.size());
  if (session.next_position() != end) throw Error(name() + ": the session moved past the context before compression");
  return end;
}

ContextPassPress::PassGuard::~PassGuard() {
  session.set_layer_hook(nullptr);
  session.set_stats_request({});
}

}  // namespace kvsqueeze
