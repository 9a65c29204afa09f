// SnapKV (arXiv 2404.14469, kvpress SnapKVPress): the attention the last `window_size` queries
// pay to each earlier slot, averaged over those queries, smoothed by a 1-D average pool
// (kernel_size, stride 1, zero padding counted as torch's avg_pool1d does), averaged over the
// G query heads of each KV head. The window itself is protected and counts in the budget.
#include "kvsqueeze/error.h"
#include "press/press_registry.h"
#include "press/snapkv_scores.h"

namespace kvsqueeze {
namespace {

struct SnapKvOptions {
  int64_t window_size = 64;
  int64_t kernel_size = 5;
};

class SnapKvPress : public ScorerPress {
 public:
  SnapKvPress(int64_t window, int64_t kernel) : window_(window), kernel_(kernel) {}
  std::string name() const override { return "snapkv"; }
  StatsRequest needs() const override { return {.window_queries = window_}; }
  LayerScores score(const LayerView& v) override { return snapkv_scores(v, kernel_, "snapkv"); }

 private:
  int64_t window_, kernel_;
};

}  // namespace

void register_snapkv_press() {
  using O = SnapKvOptions;
  register_press<O>({"snapkv", "Attention of the last window_size queries, pooled (SnapKV)."},
                    snapkv_fields<O>(), [](const O& o) {
                      check_kernel_size("snapkv", o.kernel_size);
                      return std::make_unique<SnapKvPress>(o.window_size, o.kernel_size);
                    });
}

}  // namespace kvsqueeze
