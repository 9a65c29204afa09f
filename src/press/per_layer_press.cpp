// Per-layer ratios (kvpress PerLayerCompressionPress): layer l keeps floor(len (1 - ratios[l]))
// slots per head by the inner press's rule. The ratios replace the pipeline's ratio (give
// neither --ratio nor budget=); the ratio reported for the whole cache is their mean.
#include <numeric>

#include "kvsqueeze/error.h"
#include "press/press_registry.h"
#include "press/wrapper_util.h"

namespace kvsqueeze {
namespace {

class PerLayerPress : public wrapper::Single {
 public:
  PerLayerPress(std::unique_ptr<Press> inner, std::vector<double> ratios) : Single(std::move(inner)), ratios_(std::move(ratios)) {
    reject_deferred("per_layer");
  }
  std::string name() const override { return "per_layer"; }
  bool own_budget() const override { return true; }
  LayerScores score(const LayerView& view) override { return inner_->score(view); }
  KeepSets select(const LayerView& view, const Budget& budget) override {
    const Budget b = layer_budget(view, budget);
    inner_->set_budget(b);
    return inner_->select(view, b);
  }
  KeepSets compress(const LayerView& view, const Budget& budget, KvCache& cache) override {
    const Budget b = layer_budget(view, budget);
    inner_->set_budget(b);
    return inner_->compress(view, b, cache);
  }
  double mean_ratio() const { return std::accumulate(ratios_.begin(), ratios_.end(), 0.0) / static_cast<double>(ratios_.size()); }

 private:
  Budget layer_budget(const LayerView& view, const Budget& budget) const {
    if (!budget.none())
      throw Error("press 'per_layer' sets each layer's ratio with its 'ratios' option: give no --ratio or budget= with it");
    const int64_t n_layer = view.config().n_layer;
    if (static_cast<int64_t>(ratios_.size()) != n_layer)
      throw Error("press 'per_layer' has " + std::to_string(ratios_.size()) + " ratios for a model of " + std::to_string(n_layer) +
                  " layers: give one per layer");
    Budget b;
    b.ratio = ratios_[static_cast<size_t>(view.layer)];
    return b;
  }
  std::vector<double> ratios_;
};

}  // namespace

void register_per_layer_press() {
  register_wrapper({"per_layer",
                    "Each layer compressed with its own ratio by the inner press.",
                    {{"ratios", "floats", 0, 0, 0.999999,
                      "one ratio (fraction removed) per layer, separated by ':' (or ',' in --press-opt)", {}, ""}},
                    1,
                    "Replaces the pipeline's ratio; the overall ratio is the mean of the layers' ratios. Sliding-window layers "
                    "(gemma) stay uncompressed whatever their ratio."},
                   [](const PressOptionValues& o, PressList inner) {
                     auto ratios = o.floats("ratios");
                     if (ratios.empty()) throw Error("press 'per_layer' needs ratios=R0:R1:... (one ratio per layer)");
                     return std::make_unique<PerLayerPress>(std::move(inner.at(0)), std::move(ratios));
                   });
}

}  // namespace kvsqueeze
