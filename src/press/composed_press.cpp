// Composition (kvpress ComposedPress): the inner presses compress one after the other, each on
// what the previous ones kept, so the ratio removed is 1 - prod(1 - cr_i). Unlike kvpress, the
// statistics every press sees are those captured before any eviction, remapped to the slots
// still held (window attention rows and column sums gathered to the kept slots), and every
// inner press is told of every compaction (compacted()), so none works on stale slots.
#include "kvsqueeze/error.h"
#include "press/press_registry.h"
#include "press/wrapper_util.h"

namespace kvsqueeze {
namespace {

struct ComposedOptions {
  std::vector<double> ratios;  // empty: the pipeline's ratio for each press
};

class ComposedPress : public Press {
 public:
  ComposedPress(PressList presses, std::vector<double> ratios) : presses_(std::move(presses)), ratios_(std::move(ratios)) {
    if (!ratios_.empty() && ratios_.size() != presses_.size())
      throw Error("press 'composed' has " + std::to_string(ratios_.size()) + " ratios for " + std::to_string(presses_.size()) +
                  " presses: give one per press, or none to use the pipeline's ratio for each");
    for (const auto& p : presses_)
      if (p->traits().needs_all_layers) throw Error("press 'composed' cannot run '" + p->name() + "', which decides over all layers at once");
  }
  std::string name() const override { return "composed"; }
  StatsRequest needs() const override {
    StatsRequest r;
    for (const auto& p : presses_) r = union_of(r, p->needs());
    return r;
  }
  void observe(const LayerView& view) override {
    for (auto& p : presses_) p->observe(view);
  }
  void compacted(int64_t layer, const KeepSets& keep) override {
    for (auto& p : presses_) p->compacted(layer, keep);
  }
  std::vector<Press*> inner_presses() override {
    std::vector<Press*> out;
    for (auto& p : presses_) out.push_back(p.get());
    return out;
  }
  PressTraits traits() const override { return {.own_budget = !ratios_.empty()}; }
  // The overall fraction removed for per-press ratios cr_i: 1 - prod(1 - cr_i).
  static double combined_ratio(const std::vector<double>& ratios) {
    double kept = 1.0;
    for (double r : ratios) kept *= 1.0 - r;
    return 1.0 - kept;
  }
  KeepSets compress(const LayerView& view, const Budget& budget, KvCache& cache) override {
    if (!ratios_.empty() && !budget.none())
      throw Error("press 'composed' was given one ratio per press: give no `ratio` or budget= with it");
    KeepSets total;
    for (int64_t h = 0; h < view.n_head_kv(); ++h) {
      std::vector<int32_t> all(static_cast<size_t>(view.length(h)));
      for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int32_t>(i);
      total.push_back(std::move(all));
    }
    LayerStats stats = view.stats;
    for (size_t i = 0; i < presses_.size(); ++i) {
      Budget b = budget;
      if (!ratios_.empty()) b = Budget{ratios_[i]};
      if (b.none()) continue;
      const LayerView now(view.model, view.layer, cache, stats);
      const KeepSets keep = presses_[i]->compress(now, b, cache);  // calls presses_[i]->compacted()
      for (size_t j = 0; j < presses_.size(); ++j)
        if (j != i) presses_[j]->compacted(view.layer, keep);
      stats = wrapper::gather_stats(stats, keep, view.group());
      total = wrapper::chain(total, keep);
    }
    return total;
  }

 private:
  PressList presses_;
  std::vector<double> ratios_;
};

}  // namespace

void register_composed_press() {
  using O = ComposedOptions;
  register_wrapper<O>({"composed", "Presses applied one after the other on what the previous kept (ComposedPress).", {}, -1,
                       "Overall ratio 1 - prod(1 - cr_i). Statistics are captured before any eviction and gathered to the kept "
                       "slots for each later press (kvpress passes stale ones, #145). A press relying on the window being the "
                       "last slots (snapkv) should come first."},
                      {field("ratios", &O::ratios, 0, 0.999999,
                             "one ratio per press, separated by ':' (or ',' in `options`); default: the pipeline's ratio for each")},
                      [](const O& o, PressList inner) { return std::make_unique<ComposedPress>(std::move(inner), o.ratios); });
}

}  // namespace kvsqueeze
