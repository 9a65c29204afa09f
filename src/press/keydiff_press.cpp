// KeyDiff (arXiv 2504.15364, kvpress KeyDiffPress): keys least like the head's mean key
// direction are kept: a = mean_i k_i / ||k_i||, s_i = -cos(k_i, a). Attention-free.
#include <cmath>

#include "press/press_registry.h"

namespace kvsqueeze {
namespace {

class KeyDiffPress : public ScorerPress {
 public:
  std::string name() const override { return "keydiff"; }
  LayerScores score(const LayerView& v) override {
    const int64_t dk = v.head_dim_k();
    LayerScores out(static_cast<size_t>(v.n_head_kv()));
    for (int64_t h = 0; h < v.n_head_kv(); ++h) {
      const int64_t len = v.length(h);
      std::vector<float> keys(static_cast<size_t>(len * dk));
      std::vector<double> norm(static_cast<size_t>(len)), anchor(static_cast<size_t>(dk), 0.0);
      for (int64_t j = 0; j < len; ++j) {
        float* k = keys.data() + j * dk;
        v.key_row(h, j, k);
        double sum = 0;
        for (int64_t i = 0; i < dk; ++i) sum += static_cast<double>(k[i]) * k[i];
        norm[static_cast<size_t>(j)] = std::max(std::sqrt(sum), 1e-12);
        for (int64_t i = 0; i < dk; ++i) anchor[static_cast<size_t>(i)] += k[i] / norm[static_cast<size_t>(j)] / static_cast<double>(len);
      }
      double anchor_norm = 0;
      for (double a : anchor) anchor_norm += a * a;
      anchor_norm = std::max(std::sqrt(anchor_norm), 1e-12);
      auto& s = out[static_cast<size_t>(h)];
      s.resize(static_cast<size_t>(len));
      for (int64_t j = 0; j < len; ++j) {
        double dot = 0;
        for (int64_t i = 0; i < dk; ++i) dot += keys[static_cast<size_t>(j * dk + i)] * anchor[static_cast<size_t>(i)];
        s[static_cast<size_t>(j)] = -static_cast<float>(dot / (norm[static_cast<size_t>(j)] * anchor_norm));
      }
    }
    return out;
  }
};

}  // namespace

void register_keydiff_press() {
  register_press({"keydiff", "Keeps the keys least similar to the mean key direction (KeyDiff).", {}},
                 [] { return std::make_unique<KeyDiffPress>(); });
}

}  // namespace kvsqueeze
