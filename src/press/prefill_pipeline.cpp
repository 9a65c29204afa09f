#include "kvsqueeze/press.h"
#include "kvsqueeze/press_pipeline.h"

namespace kvsqueeze {

void prefill_with_press(Session& session, const std::vector<int32_t>& ids, Press& press, const Budget& budget, int64_t slack) {
  PressRunner runner(session, &press, budget, nullptr, CompressionPolicy{});
  runner.prefill(ids, slack);
}

}  // namespace kvsqueeze
