// PyramidKV (arXiv 2406.02069, kvpress PyramidKVPress; docs/METHODS.md §4.2): SnapKV scores with a
// per-layer budget that falls linearly from the first layer to the last, averaging to the
// uniform budget. For layer l of N_L, run length L and base = L (1 - cr):
//   mn = base / beta, mx = 2 base - mn; if mx >= L - w: mx = L - w, mn = 2 base - mx
//   n_l = round(mx - l (mx - mn) / (N_L - 1))   if L >= mx >= mn >= w
//   n_l = round(L (1 - cr))                     otherwise (SnapKV's budget)
// with Python's round (half to even), as kvpress. l is the model's layer index, so on models
// whose sliding-window layers are never compressed (gemma 3) only the global layers' budgets of
// the pyramid are used.
#include <algorithm>
#include <cmath>

#include "kvsqueeze/error.h"
#include "press/press_registry.h"
#include "press/pyramidkv_budget.h"
#include "press/snapkv_scores.h"

namespace kvsqueeze {

int64_t pyramidkv_layer_budget(int64_t len, double ratio, int64_t window, double beta, int64_t layer, int64_t n_layer) {
  // The operations and their order follow kvpress, so that halves round the same way.
  const double q_len = static_cast<double>(len), w = static_cast<double>(window);
  const double max_capacity = w + q_len * (1.0 - ratio);
  double mn = (max_capacity - w) / beta;
  double mx = (max_capacity - w) * 2.0 - mn;
  if (mx >= q_len - w) {
    mx = q_len - w;
    mn = (max_capacity - w) * 2.0 - mx;
  }
  double n = 0;
  if (!(q_len >= mx && mx >= mn && mn >= w)) {
    n = std::nearbyint(q_len * (1.0 - ratio));  // fallback: SnapKV's budget
  } else {
    const double steps = n_layer > 1 ? (mx - mn) / static_cast<double>(n_layer - 1) : 0.0;
    n = std::nearbyint(mx - static_cast<double>(layer) * steps);
  }
  return std::clamp<int64_t>(static_cast<int64_t>(n), std::min<int64_t>(1, len), len);
}

namespace {

struct PyramidKvOptions {
  int64_t window_size = 64;
  int64_t kernel_size = 5;
  double beta = 20;
};

class PyramidKvPress : public Press {
 public:
  PyramidKvPress(int64_t window, int64_t kernel, double beta) : window_(window), kernel_(kernel), beta_(beta) {}
  std::string name() const override { return "pyramidkv"; }
  StatsRequest needs() const override { return {.window_queries = window_}; }
  LayerScores score(const LayerView& v) override { return snapkv_scores(v, kernel_, "pyramidkv"); }
  KeepSets select(const LayerView& v, const Budget& budget) override {
    const LayerScores scores = score(v);
    std::vector<int64_t> counts;
    for (int64_t h = 0; h < v.n_head_kv(); ++h) {
      const int64_t len = v.length(h);
      // An absolute budget is the ratio it amounts to on this run.
      const double ratio = budget.tokens >= 0 ? 1.0 - static_cast<double>(std::min(len, budget.tokens)) / static_cast<double>(len)
                                              : budget.ratio;
      counts.push_back(pyramidkv_layer_budget(len, ratio, window_, beta_, v.layer, v.config().n_layer));
    }
    return top_k_per_head(scores, counts);
  }

 private:
  int64_t window_, kernel_;
  double beta_;
};

}  // namespace

void register_pyramidkv_press() {
  using O = PyramidKvOptions;
  auto fields = snapkv_fields<O>();
  fields.push_back(field("beta", &O::beta, 1, 1e9, "steepness: the last layer's budget is about base / beta"));
  register_press<O>({"pyramidkv", "SnapKV scores with layer budgets falling linearly from the first layer to the last (PyramidKV).", {}, 0,
                     "As kvpress: the layer index is the model's (gemma 3 compresses its global layers only, with their "
                     "pyramid budgets); when the pyramid does not fit (L >= mx >= mn >= window fails) the budget is "
                     "round(L (1 - cr)), half to even. More window slots than the budget: all kept (kvpress keeps a subset)."},
                    fields, [](const O& o) {
                      check_kernel_size("pyramidkv", o.kernel_size);
                      return std::make_unique<PyramidKvPress>(o.window_size, o.kernel_size, o.beta);
                    });
}

}  // namespace kvsqueeze
