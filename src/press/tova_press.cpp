// TOVA (arXiv 2401.06104, kvpress TOVAPress): the last query's attention, averaged over all
// query heads and shared by every KV head; the last slot is protected. No pooling.
#include <cmath>

#include "kvsqueeze/error.h"
#include "press/press_registry.h"

namespace kvsqueeze {
namespace {

class TovaPress : public ScorerPress {
 public:
  std::string name() const override { return "tova"; }
  StatsRequest needs() const override { return {.window_queries = 1}; }
  LayerScores score(const LayerView& v) override {
    const int64_t hkv = v.n_head_kv();
    const auto& probs = v.stats.attention;
    if (probs.window.empty()) throw Error("tova: last-query attention was not computed for layer " + std::to_string(v.layer));
    const int64_t len = v.length(0);
    for (int64_t h = 1; h < hkv; ++h)
      if (v.length(h) != len) throw Error("tova shares one score over heads and needs equal run lengths");
    std::vector<float> shared(static_cast<size_t>(len), 0.0f);
    const int64_t last = probs.window_rows - 1;
    for (int64_t q = 0; q < v.config().n_head; ++q) {
      const auto& p = probs.window[static_cast<size_t>(q)];
      for (int64_t i = 0; i < len; ++i) shared[static_cast<size_t>(i)] += p[static_cast<size_t>(last * len + i)] / static_cast<float>(v.config().n_head);
    }
    if (len > 0) shared.back() = INFINITY;
    return LayerScores(static_cast<size_t>(hkv), shared);
  }
};

}  // namespace

void register_tova_press() {
  register_press({"tova", "Last query's attention averaged over all heads (TOVA).", {}},
                 [] { return std::make_unique<TovaPress>(); });
}

}  // namespace kvsqueeze
