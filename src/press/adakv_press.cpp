// AdaKV (arXiv 2407.11550, kvpress AdaKVPress): head-wise budgets within a layer. Each head
// keeps its own top floor(n_h * alpha_safeguard) slots; the rest of the layer's budget
// (sum of n_h = max(1, floor(len_h (1 - cr)))) goes to the best remaining scores of all heads
// pooled. kvpress only masks the evicted slots; here they are really evicted, so the heads of
// a layer end with different lengths (the ragged cache) and the memory is freed.
#include "press/press_registry.h"
#include "press/wrapper_util.h"

namespace kvsqueeze {
namespace {

class AdaKvPress : public wrapper::Single {
 public:
  AdaKvPress(std::unique_ptr<Press> inner, double alpha) : Single(std::move(inner)), alpha_(alpha) { reject_deferred("adakv"); }
  std::string name() const override { return "adakv"; }
  LayerScores score(const LayerView& view) override { return inner_->score(view); }
  KeepSets select(const LayerView& view, const Budget& budget) override {
    inner_->set_budget(budget);  // kvpress: the inner press's compression_ratio is AdaKV's
    LayerScores scores = inner_->score(view);
    return wrapper::adakv_allocation(view, budget, alpha_, scores);
  }

 private:
  double alpha_;
};

}  // namespace

void register_adakv_press() {
  register_wrapper({"adakv",
                    "Head-wise budgets: a per-head safeguard, then the layer's best scores over all heads pooled (AdaKV).",
                    {{"alpha_safeguard", "float", 0.2, 0, 1, "fraction of its own budget each head keeps by its own ranking"}},
                    1,
                    "Evicts for real (kvpress only masks): heads of a layer end with different lengths and the memory is "
                    "freed. The inner press's scores must be comparable across heads (SnapKV, ExpectedAttention, ...)."},
                   [](const PressOptionValues& o, PressList inner) {
                     return std::make_unique<AdaKvPress>(std::move(inner.at(0)), o.at("alpha_safeguard"));
                   });
}

}  // namespace kvsqueeze
