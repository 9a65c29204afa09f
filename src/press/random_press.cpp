// Random: seeded U(0,1) scores, the comparison floor. Each (layer, head) draws from its own
// stream keyed by (seed, layer, head), so results do not depend on evaluation order.
#include <random>

#include "press/press_registry.h"

namespace kvsqueeze {
namespace {

struct RandomOptions {
  int64_t seed = 42;
};

class RandomPress : public ScorerPress {
 public:
  explicit RandomPress(uint64_t seed) : seed_(seed) {}
  std::string name() const override { return "random"; }
  LayerScores score(const LayerView& v) override {
    LayerScores out(static_cast<size_t>(v.n_head_kv()));
    for (int64_t h = 0; h < v.n_head_kv(); ++h) {
      std::seed_seq key{static_cast<uint32_t>(seed_), static_cast<uint32_t>(seed_ >> 32), static_cast<uint32_t>(v.layer),
                        static_cast<uint32_t>(h)};
      std::mt19937 rng(key);
      std::uniform_real_distribution<float> u(0.0f, 1.0f);
      auto& s = out[static_cast<size_t>(h)];
      s.resize(static_cast<size_t>(v.length(h)));
      for (auto& x : s) x = u(rng);
    }
    return out;
  }

 private:
  uint64_t seed_;
};

}  // namespace

void register_random_press() {
  using O = RandomOptions;
  register_press<O>({"random", "Random scores: the floor any method must beat."}, {seed_field(&O::seed, "RNG seed")},
                    [](const O& o) { return std::make_unique<RandomPress>(static_cast<uint64_t>(o.seed)); });
}

}  // namespace kvsqueeze
