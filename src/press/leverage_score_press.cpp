// LeverageScore (kvpress LeverageScorePress, docs/METHODS.md §3.11): approximate statistical
// leverage of the centred pre-RoPE keys under a Gaussian right sketch of width
// sketch_dimension, z-scored over all heads at once (maths in leverage_math.h).
#include "press/leverage_math.h"
#include "press/press_registry.h"

namespace kvsqueeze {
namespace {

struct LeverageScoreOptions {
  int64_t sketch_dimension = 48;
  int64_t seed = 42;
};

class LeverageScorePress : public ScorerPress {
 public:
  LeverageScorePress(int64_t k, uint64_t seed) : k_(k), seed_(seed) {}
  std::string name() const override { return "leverage_score"; }
  LayerScores score(const LayerView& v) override { return leverage::layer_scores(v, 0, 0, k_, seed_); }

 private:
  int64_t k_;
  uint64_t seed_;
};

}  // namespace

void register_leverage_score_press() {
  using O = LeverageScoreOptions;
  register_press<O>({"leverage_score", "Approximate leverage of the pre-RoPE keys under a Gaussian sketch (Compactor's geometry part).", {}, 0,
                     "The sketch comes from kvsqueeze's counter-based RNG keyed by (seed, layer, head), not torch's "
                     "global RNG, so scores match kvpress only given the same sketch. Maths in double precision."},
                    {field("sketch_dimension", &O::sketch_dimension, 1, 4096, "columns of the Gaussian sketch"),
                     seed_field(&O::seed, "seed of the sketch (counter-based, per layer and head)")},
                    [](const O& o) { return std::make_unique<LeverageScorePress>(o.sketch_dimension, static_cast<uint64_t>(o.seed)); });
}

}  // namespace kvsqueeze
