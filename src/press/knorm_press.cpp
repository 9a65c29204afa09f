// Knorm (arXiv 2406.11430): keys with a low L2 norm draw attention, so s_i = -||k_i||.
// RoPE does not change the norm, so the cached post-RoPE keys serve directly.
#include <cmath>

#include "press/press_registry.h"

namespace kvsqueeze {
namespace {

class KnormPress : public ScorerPress {
 public:
  std::string name() const override { return "knorm"; }
  LayerScores score(const LayerView& v) override {
    LayerScores out(static_cast<size_t>(v.n_head_kv()));
    const int64_t dk = v.head_dim_k();
    std::vector<float> row(static_cast<size_t>(dk));
    for (int64_t h = 0; h < v.n_head_kv(); ++h) {
      const int64_t len = v.length(h);
      auto& s = out[static_cast<size_t>(h)];
      s.resize(static_cast<size_t>(len));
      for (int64_t j = 0; j < len; ++j) {
        v.key_row(h, j, row.data());
        double sum = 0;
        for (float x : row) sum += static_cast<double>(x) * x;
        s[static_cast<size_t>(j)] = -static_cast<float>(std::sqrt(sum));
      }
    }
    return out;
  }
};

}  // namespace

void register_knorm_press() {
  register_press({"knorm", "Keeps the keys with the lowest L2 norm (arXiv 2406.11430).", {}},
                 [] { return std::make_unique<KnormPress>(); });
}

}  // namespace kvsqueeze
