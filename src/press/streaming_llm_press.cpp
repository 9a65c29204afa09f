// StreamingLLM (arXiv 2309.17453): keep the first n_sink positions and the most recent ones.
// Scores rise with position and the sinks are protected, so the budget rule keeps exactly
// the sinks plus the latest floor(len x (1 - ratio)) - n_sink slots, the same in every head.
#include <cmath>

#include "press/press_registry.h"

namespace kvsqueeze {
namespace {

struct StreamingLlmOptions {
  int64_t n_sink = 4;
};

class StreamingLlmPress : public ScorerPress {
 public:
  explicit StreamingLlmPress(int64_t n_sink) : n_sink_(n_sink) {}
  std::string name() const override { return "streaming_llm"; }
  LayerScores score(const LayerView& v) override {
    LayerScores out(static_cast<size_t>(v.n_head_kv()));
    for (int64_t h = 0; h < v.n_head_kv(); ++h) {
      const auto pos = v.positions(h);
      auto& s = out[static_cast<size_t>(h)];
      s.resize(pos.size());
      for (size_t j = 0; j < pos.size(); ++j) s[j] = pos[j] < n_sink_ ? INFINITY : static_cast<float>(pos[j]);
    }
    return out;
  }

 private:
  int64_t n_sink_;
};

}  // namespace

void register_streaming_llm_press() {
  using O = StreamingLlmOptions;
  register_press<O>({"streaming_llm", "Keeps the first n_sink tokens and the most recent ones (StreamingLLM)."},
                    {field("n_sink", &O::n_sink, 0, 1e9, "attention-sink positions always kept")},
                    [](const O& o) { return std::make_unique<StreamingLlmPress>(o.n_sink); });
}

}  // namespace kvsqueeze
