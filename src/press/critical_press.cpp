// CriticalKV (arXiv 2502.03805, kvpress CriticalKVPress): two stages. The inner press's top
// floor((1 - cr) L first_stage_ratio) slots of each head are kept outright; every other slot is
// rescored as (s + epsilon) * mean over the head's query group of ||v_i W_o[q]||_1 (the L1 norm
// of the value's contribution to the attention output), and the best fill the budget.
#include <cmath>

#include "press/press_registry.h"
#include "press/wrapper_util.h"

namespace kvsqueeze {
namespace {

struct CriticalOptions {
  double epsilon = 1e-4;
  double first_stage_ratio = 0.5;
};

class CriticalPress : public wrapper::Single {
 public:
  CriticalPress(std::unique_ptr<Press> inner, double eps, double first) : Single(std::move(inner)), eps_(eps), first_(first) {
    reject_deferred("critical");
  }
  std::string name() const override { return "critical"; }
  // The second-stage scores (no first-stage protection: that depends on the budget).
  LayerScores score(const LayerView& view) override { return reweight(view, inner_->score(view)); }
  KeepSets select(const LayerView& view, const Budget& budget) override {
    LayerScores base = inner_->score(view);
    std::vector<int64_t> first, counts;
    for (int64_t h = 0; h < view.n_head_kv(); ++h) {
      const int64_t len = view.length(h), n = budget.keep(len);
      counts.push_back(n);
      // kvpress: int((1 - cr) * L * first_stage_ratio), not from the rounded n.
      first.push_back(budget.tokens >= 0 ? static_cast<int64_t>(static_cast<double>(n) * first_)
                                         : static_cast<int64_t>((1.0 - budget.ratio) * static_cast<double>(len) * first_));
    }
    const KeepSets stage1 = top_k_per_head(base, first);
    LayerScores s = reweight(view, std::move(base));
    for (size_t h = 0; h < s.size(); ++h)
      for (int32_t i : stage1[h]) s[h][static_cast<size_t>(i)] = INFINITY;
    return top_k_per_head(s, counts);
  }

 private:
  LayerScores reweight(const LayerView& view, LayerScores s) const {
    const auto norms = wrapper::projected_value_norms(view, wrapper::output_projection(view));
    for (size_t h = 0; h < s.size(); ++h)
      for (size_t i = 0; i < s[h].size(); ++i)
        if (s[h][i] != INFINITY) s[h][i] = (s[h][i] + static_cast<float>(eps_)) * norms[h][i];
    return s;
  }
  double eps_, first_;
};

}  // namespace

void register_critical_press() {
  using O = CriticalOptions;
  register_wrapper<O>({"critical", "Two-stage selection: the inner press's best, then scores weighted by ||v W_o||_1 (CriticalKV).", {}, 1,
                       "Wrap expected_attention with use_vnorm=false (the value norm is replaced by the projected one). "
                       "score() returns the second-stage scores without the first-stage protection (it depends on the budget)."},
                      {field("epsilon", &O::epsilon, 0, 1e6, "added to the inner scores before weighting"),
                       field("first_stage_ratio", &O::first_stage_ratio, 0, 1, "fraction of the budget kept by the inner scores alone")},
                      [](const O& o, PressList inner) {
                        return std::make_unique<CriticalPress>(std::move(inner.at(0)), o.epsilon, o.first_stage_ratio);
                      });
}

}  // namespace kvsqueeze
