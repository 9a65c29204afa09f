// ChunkKV (arXiv 2502.00299, kvpress ChunkKVPress): keeps whole chunks of chunk_length
// consecutive slots, the same for every KV head. A chunk's score is the mean over its slots of
// the inner scores summed over KV heads (a final partial chunk is a chunk of its own); the best
// max(1, floor(n_chunks (1 - cr))) chunks are kept. Runs shorter than one chunk fall back to the
// inner press.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "kvsqueeze/error.h"
#include "press/press_registry.h"
#include "press/wrapper_util.h"

namespace kvsqueeze {
namespace {

struct ChunkKvOptions {
  int64_t chunk_length = 20;
};

class ChunkKvPress : public wrapper::Single {
 public:
  ChunkKvPress(std::unique_ptr<Press> inner, int64_t chunk) : Single(std::move(inner)), chunk_(chunk) { reject_deferred("chunkkv"); }
  std::string name() const override { return "chunkkv"; }
  LayerScores score(const LayerView& view) override { return inner_->score(view); }
  KeepSets select(const LayerView& view, const Budget& budget) override {
    const int64_t len = view.length(0);
    for (int64_t h = 1; h < view.n_head_kv(); ++h)
      if (view.length(h) != len)
        throw Error("press 'chunkkv' keeps the same chunks in every head, but the heads of layer " + std::to_string(view.layer) +
                    " hold different numbers of slots (compressed by a head-wise press before?)");
    if (len < chunk_) return inner_->select(view, budget);
    LayerScores s = inner_->score(view);
    // Protected slots count as their head's best finite score + 1, as kvpress pads them, so that
    // a chunk holding a window does not outrank every other chunk by an infinite margin.
    for (auto& head : s) {
      float best = -INFINITY;
      for (float x : head)
        if (std::isfinite(x)) best = std::max(best, x);
      for (float& x : head)
        if (x == INFINITY) x = std::isfinite(best) ? best + 1.0f : 1.0f;
    }
    const int64_t n_chunks = (len + chunk_ - 1) / chunk_;
    std::vector<double> chunk_score(static_cast<size_t>(n_chunks));
    for (int64_t c = 0; c < n_chunks; ++c) {
      const int64_t b = c * chunk_, e = std::min(len, b + chunk_);
      double sum = 0;
      for (int64_t i = b; i < e; ++i)
        for (const auto& head : s) sum += head[static_cast<size_t>(i)];
      chunk_score[static_cast<size_t>(c)] = sum / static_cast<double>(e - b);
    }
    const auto keep = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(n_chunks) * wrapper::keep_fraction(budget, len)));
    std::vector<int64_t> order(static_cast<size_t>(n_chunks));
    std::iota(order.begin(), order.end(), 0);
    auto key = [&](int64_t c) {
      const double x = chunk_score[static_cast<size_t>(c)];
      return std::isnan(x) ? -INFINITY : x;
    };
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return key(a) > key(b) || (key(a) == key(b) && a > b); });
    order.resize(static_cast<size_t>(std::min(keep, n_chunks)));
    std::sort(order.begin(), order.end());
    std::vector<int32_t> slots;
    for (int64_t c : order)
      for (int64_t i = c * chunk_; i < std::min(len, (c + 1) * chunk_); ++i) slots.push_back(static_cast<int32_t>(i));
    return KeepSets(static_cast<size_t>(view.n_head_kv()), slots);
  }

 private:
  int64_t chunk_;
};

}  // namespace

void register_chunkkv_press() {
  using O = ChunkKvOptions;
  register_wrapper<O>({"chunkkv", "Keeps whole chunks of consecutive slots, chosen by the inner scores summed over heads (ChunkKV).", {}, 1,
                       "The kept count is max(1, floor(n_chunks (1 - cr))) chunks, not floor(L (1 - cr)) slots (as kvpress)."},
                      {field("chunk_length", &O::chunk_length, 1, 1e9, "slots per chunk (the last one may be shorter)")},
                      [](const O& o, PressList inner) { return std::make_unique<ChunkKvPress>(std::move(inner.at(0)), o.chunk_length); });
}

}  // namespace kvsqueeze
