// Per-layer ratios (kvpress PerLayerCompressionPress): layer l keeps floor(len (1 - ratios[l]))
// slots per head by the inner press's rule. The ratios (option `ratios`, or a JSON file
// `ratios_file`: a list or {"ratios": [...]}) replace the pipeline's ratio (give neither --ratio
// nor budget=); the ratio reported for the whole cache is their mean.
#include <cmath>
#include <fstream>
#include <numeric>

#include <nlohmann/json.hpp>

#include "kvsqueeze/error.h"
#include "press/press_registry.h"
#include "press/wrapper_util.h"

namespace kvsqueeze {
namespace {

struct PerLayerOptions {
  std::vector<double> ratios;
  std::string ratios_file;
};

class PerLayerPress : public wrapper::Single {
 public:
  PerLayerPress(std::unique_ptr<Press> inner, std::vector<double> ratios) : Single(std::move(inner)), ratios_(std::move(ratios)) {
    reject_deferred("per_layer");
  }
  std::string name() const override { return "per_layer"; }
  PressTraits traits() const override { return {.own_budget = true}; }
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
      throw Error("press 'per_layer' sets each layer's ratio with its 'ratios' option: give no `ratio` or budget= with it");
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

// The ratios of a JSON file: [r0, r1, ...] or {"ratios": [r0, r1, ...]}, each in [0, 1).
std::vector<double> read_ratios_file(const std::string& path) {
  const std::string who = "press 'per_layer' ratios_file '" + path + "'";
  std::ifstream in(path);
  if (!in) throw Error(who + " cannot be read (missing file?)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    std::string msg = e.what();
    for (char& c : msg)
      if (c == '\n') c = ' ';
    throw Error(who + " is not valid JSON (" + msg + ")");
  }
  if (j.is_object() && j.contains("ratios")) j = j["ratios"];
  if (!j.is_array() || j.empty()) throw Error(who + " must hold a non-empty list of ratios, [r0, r1, ...] or {\"ratios\": [...]}");
  std::vector<double> out;
  for (const auto& x : j) {
    if (!x.is_number()) throw Error(who + ": ratio " + std::to_string(out.size()) + " is not a number");
    const double r = x.get<double>();
    if (!(r >= 0.0 && r < 1.0)) throw Error(who + ": ratio " + std::to_string(out.size()) + " is " + std::to_string(r) + ", not in [0, 1)");
    out.push_back(r);
  }
  return out;
}

}  // namespace

void register_per_layer_press() {
  using O = PerLayerOptions;
  register_wrapper<O>({"per_layer", "Each layer compressed with its own ratio by the inner press.", {}, 1,
                       "Replaces the pipeline's ratio; the overall ratio is the mean of the layers' ratios. Sliding-window layers "
                       "(gemma) stay uncompressed whatever their ratio."},
                      {field("ratios", &O::ratios, 0, 0.999999, "one ratio (fraction removed) per layer, separated by ':' (or ',' in `options`)"),
                       field("ratios_file", &O::ratios_file,
                             "instead of ratios: a JSON file holding one ratio per layer, [r0, r1, ...] or {\"ratios\": [r0, r1, ...]}")},
                      [](const O& o, PressList inner) {
                        auto ratios = o.ratios;
                        if (!o.ratios_file.empty() && !ratios.empty()) throw Error("press 'per_layer': give ratios or ratios_file, not both");
                        if (!o.ratios_file.empty()) ratios = read_ratios_file(o.ratios_file);
                        if (ratios.empty())
                          throw Error("press 'per_layer' needs ratios=R0:R1:... or ratios_file=FILE (one ratio per layer)");
                        return std::make_unique<PerLayerPress>(std::move(inner.at(0)), std::move(ratios));
                      });
}

}  // namespace kvsqueeze
