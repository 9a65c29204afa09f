// AdaKV (arXiv 2407.11550; docs/METHODS.md §4.3): head-wise budgets within a layer, by one of two
// rules.
// rule=kvpress (kvpress AdaKVPress, the default): each head keeps its own top
//   floor(n_h * alpha_safeguard) slots; the rest of the layer's budget (sum of
//   n_h = max(1, floor(len_h (1 - cr)))) goes to the best remaining scores of all heads pooled.
// rule=original (FFY0/AdaKV AdaptiveSnapKVCluster): with B'_h = n_h - (head h's protected slots,
//   the scorer's window, kept on top as upstream keeps its window) and alpha = floor_alpha:
//   c_h = head h's entries in the layer's top sum(B'_h) unprotected scores, all heads pooled;
//   cap_h = round(c_h (1 - alpha) + floor(B'_h alpha)) (half to even, float32 as upstream);
//   the caps are fitted to sum exactly to sum(B'_h) (largest remainder; parity=true keeps the
//   raw caps, whose sum upstream lets fall short).
// kvpress only masks the evicted slots; here they are really evicted, so the heads of a layer
// end with different lengths (the ragged cache) and the memory is freed.
#include <algorithm>
#include <cmath>

#include "press/head_budget.h"
#include "press/press_registry.h"
#include "press/wrapper_util.h"

namespace kvsqueeze {
namespace {

struct AdaKvOptions {
  double alpha = 0.2;
  std::string rule = "kvpress";
  bool original = false;  // rule == "original"
  double floor_alpha = 0.2;
  bool normalize = false;
  bool parity = false;
};

class AdaKvPress : public wrapper::Single {
 public:
  AdaKvPress(std::unique_ptr<Press> inner, AdaKvOptions o) : Single(std::move(inner)), o_(o) { reject_deferred("adakv"); }
  std::string name() const override { return "adakv"; }
  LayerScores score(const LayerView& view) override { return inner_->score(view); }
  KeepSets select(const LayerView& view, const Budget& budget) override {
    inner_->set_budget(budget);  // kvpress: the inner press's compression_ratio is AdaKV's
    LayerScores scores = inner_->score(view);
    if (!o_.original) return wrapper::adakv_allocation(view, budget, o_.alpha, scores);
    const int64_t H = view.n_head_kv();
    std::vector<std::vector<float>> free_scores(static_cast<size_t>(H));
    std::vector<int64_t> base, prot, hi;
    int64_t total = 0;
    for (int64_t h = 0; h < H; ++h) {
      const auto& s = scores.at(static_cast<size_t>(h));
      for (float x : s)
        if (x != INFINITY) free_scores[static_cast<size_t>(h)].push_back(x);
      const auto p = static_cast<int64_t>(s.size() - free_scores[static_cast<size_t>(h)].size());
      prot.push_back(p);
      hi.push_back(view.length(h) - p);
      base.push_back(std::max<int64_t>(0, budget.keep(view.length(h)) - p));
      total += base.back();
    }
    const auto r = head_budget::adakv_original_caps(free_scores, base, o_.floor_alpha, o_.normalize);
    std::vector<int64_t> caps = r.raw;
    if (o_.parity) {
      for (size_t i = 0; i < caps.size(); ++i) caps[i] = std::clamp<int64_t>(caps[i], 0, hi[i]);
    } else {
      caps = head_budget::fit_to_total(r.target, r.raw, hi, total);
    }
    std::vector<int64_t> counts;
    for (size_t i = 0; i < caps.size(); ++i) counts.push_back(prot[i] + caps[i]);
    return top_k_per_head(scores, counts);
  }

 private:
  AdaKvOptions o_;
};

}  // namespace

void register_adakv_press() {
  using O = AdaKvOptions;
  register_wrapper<O>(
      {"adakv",
       "Head-wise budgets within each layer (AdaKV): kvpress's rule (a per-head safeguard, then the layer's best scores over all "
       "heads pooled) or the original one (counts in the layer's pooled top, blended with a floor).",
       {},
       1,
       "Evicts for real (kvpress only masks): heads of a layer end with different lengths and the memory is freed. The inner "
       "press's scores must be comparable across heads (SnapKV, ExpectedAttention, ...). rule=original: upstream's window on top "
       "becomes the inner press's protected slots, counted inside our per-head budget n (B' = n - protected slots, i.e. "
       "upstream's base_capacity = n); caps are fitted to sum exactly to the layer's budget (largest remainder) unless "
       "parity=true; skip and pyram_mode are not offered (use per_layer/pyramidkv)."},
      {field("alpha_safeguard", &O::alpha, 0, 1, "rule=kvpress: fraction of its own budget each head keeps by its own ranking"),
       field("rule", &O::rule, {"kvpress", "original"},
             "kvpress: safeguard then pooled top-k (kvpress AdaKVPress); original: cap_h = round(c_h (1 - floor_alpha) + "
             "floor(B' floor_alpha)) from head h's count c_h in the layer's pooled top (FFY0/AdaKV)"),
       field("floor_alpha", &O::floor_alpha, 0, 1,
             "rule=original: the floor share of each head's budget B' (FFY0/AdaKV floor_alpha; 0.2 as its LongBench scripts and HeadKV; "
             "its code default is 0.5)"),
       field("normalize", &O::normalize,
             "rule=original: before counting, scale each head's scores by the mass of its top B' over its total mass (upstream "
             "normalize; meaningful for non-negative scores)"),
       field("parity", &O::parity, "rule=original: upstream's raw rounded caps (their sum may fall short of the budget)")},
      [](O o, PressList inner) {
        o.original = o.rule == "original";
        return std::make_unique<AdaKvPress>(std::move(inner.at(0)), o);
      });
}

}  // namespace kvsqueeze
