// CriticalAdaKV (arXiv 2502.03805, kvpress CriticalAdaKVPress): AdaKV's allocation with
// CriticalKV's two stages inside each head. Each head's top floor(n_h alpha_safeguard) inner
// scores are safeguarded; the layer's budget, pooled over heads, sets each head's budget b_h;
// each head keeps its top floor(b_h first_stage_ratio) (safeguard included) outright and fills
// b_h with the best (s + epsilon) * ||v W_o||_1. Evicted for real (kvpress masks).
#include <cfloat>
#include <cmath>

#include "press/press_registry.h"
#include "press/wrapper_util.h"

namespace kvsqueeze {
namespace {

struct CriticalAdaKvOptions {
  double alpha_safeguard = 0.2;
  double epsilon = 1e-4;
  double first_stage_ratio = 0.5;
};

class CriticalAdaKvPress : public wrapper::Single {
 public:
  CriticalAdaKvPress(std::unique_ptr<Press> inner, double alpha, double eps, double first)
      : Single(std::move(inner)), alpha_(alpha), eps_(eps), first_(first) {
    reject_deferred("critical_adakv");
  }
  std::string name() const override { return "critical_adakv"; }
  LayerScores score(const LayerView& view) override { return inner_->score(view); }
  KeepSets select(const LayerView& view, const Budget& budget) override {
    inner_->set_budget(budget);
    LayerScores s = inner_->score(view);
    const KeepSets alloc = wrapper::adakv_allocation(view, budget, alpha_, s);
    std::vector<int64_t> budgets, first;
    for (const auto& k : alloc) {
      budgets.push_back(static_cast<int64_t>(k.size()));
      first.push_back(static_cast<int64_t>(static_cast<double>(k.size()) * first_));
    }
    const KeepSets stage1 = top_k_per_head(s, first);
    const auto norms = wrapper::projected_value_norms(view, wrapper::output_projection(view));
    for (size_t h = 0; h < s.size(); ++h) {
      for (size_t i = 0; i < s[h].size(); ++i)  // safeguarded slots stay on top, as kvpress's finfo.max does
        s[h][i] = s[h][i] >= FLT_MAX ? INFINITY : (s[h][i] + static_cast<float>(eps_)) * norms[h][i];
      for (int32_t i : stage1[h]) s[h][static_cast<size_t>(i)] = INFINITY;
    }
    return top_k_per_head(s, budgets);
  }

 private:
  double alpha_, eps_, first_;
};

}  // namespace

void register_critical_adakv_press() {
  using O = CriticalAdaKvOptions;
  register_wrapper<O>({"critical_adakv", "AdaKV's head-wise budgets with CriticalKV's two stages within each head (CriticalAdaKV).", {}, 1,
                       "Evicts for real (kvpress only masks): heads end with different lengths. Wrap expected_attention with "
                       "use_vnorm=false."},
                      {field("alpha_safeguard", &O::alpha_safeguard, 0, 1, "fraction of its own budget each head keeps by its own ranking"),
                       field("epsilon", &O::epsilon, 0, 1e6, "added to the inner scores before weighting"),
                       field("first_stage_ratio", &O::first_stage_ratio, 0, 1, "fraction of each head's budget kept by the inner scores alone")},
                      [](const O& o, PressList inner) {
                        return std::make_unique<CriticalAdaKvPress>(std::move(inner.at(0)), o.alpha_safeguard, o.epsilon, o.first_stage_ratio);
                      });
}

}  // namespace kvsqueeze
