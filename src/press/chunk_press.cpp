// Chunk-wise scoring (kvpress ChunkPress, after FINCH): the cache is cut into chunks of
// chunk_length slots, each chunk is scored on its own (the inner press sees a view of that
// chunk: keys, values, positions and the matching rows of token statistics) and keeps
// max(1, floor(len_c (1 - cr))) slots, so compression is spread evenly over the context.
#include <algorithm>

#include "press/press_registry.h"
#include "press/wrapper_util.h"

namespace kvsqueeze {
namespace {

struct ChunkOptions {
  int64_t chunk_length = 1024;
  bool parity = false;
};

class ChunkPress : public wrapper::Single {
 public:
  ChunkPress(std::unique_ptr<Press> inner, int64_t chunk, bool parity) : Single(std::move(inner)), chunk_(chunk), parity_(parity) {
    reject_deferred("chunk");
    wrapper::reject_attention(*inner_, "chunk");
  }
  std::string name() const override { return "chunk"; }
  // Each chunk's scores from its own view, concatenated.
  LayerScores score(const LayerView& view) override {
    LayerScores out(static_cast<size_t>(view.n_head_kv()));
    for_chunks(view, [&](const std::vector<int64_t>&, const LayerScores& s) {
      for (size_t h = 0; h < s.size(); ++h) out[h].insert(out[h].end(), s[h].begin(), s[h].end());
    });
    return out;
  }
  KeepSets select(const LayerView& view, const Budget& budget) override {
    KeepSets out(static_cast<size_t>(view.n_head_kv()));
    for_chunks(view, [&](const std::vector<int64_t>& begin, const LayerScores& s) {
      std::vector<int64_t> counts;
      for (size_t h = 0; h < s.size(); ++h) {
        const auto len_c = static_cast<int64_t>(s[h].size());
        if (budget.tokens < 0) counts.push_back(budget.keep(len_c));
        else counts.push_back(len_c == 0 ? 0 : std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(len_c) *
                                                                           wrapper::keep_fraction(budget, view.length(static_cast<int64_t>(h))))));
      }
      const KeepSets k = top_k_per_head(s, counts);
      for (size_t h = 0; h < k.size(); ++h)
        for (int32_t i : k[h]) out[h].push_back(static_cast<int32_t>(begin[h]) + i);
    });
    return out;
  }

 private:
  template <class F>
  void for_chunks(const LayerView& view, F&& f) {
    int64_t longest = 0;
    for (int64_t h = 0; h < view.n_head_kv(); ++h) longest = std::max(longest, view.length(h));
    for (int64_t start = 0; start < longest; start += chunk_) {
      std::vector<int64_t> begin, end;
      for (int64_t h = 0; h < view.n_head_kv(); ++h) {
        begin.push_back(std::min(start, view.length(h)));
        end.push_back(std::min(start + chunk_, view.length(h)));
      }
      const wrapper::SubView sub(view, begin, end, parity_);
      f(begin, inner_->score(sub.view()));
    }
  }
  int64_t chunk_;
  bool parity_;
};

}  // namespace

void register_chunk_press() {
  using O = ChunkOptions;
  register_wrapper<O>({"chunk", "Scores and compresses each chunk of the cache on its own (ChunkPress, FINCH-style).", {}, 1,
                       "Inner presses needing attention statistics (window attention, column sums) are rejected: those cover the "
                       "whole cache. Token statistics (pre-RoPE queries, hidden states) are sliced to each chunk's positions. "
                       "kvpress hands the inner scorer the chunk's hidden states only, so expected_attention estimates the "
                       "future queries from the chunk's own queries, and places them at positions [len_c, len_c + 512) whatever "
                       "the chunk's place (its keys are at their true positions); here statistics of the whole context and the "
                       "true future positions are used, kvpress's behaviour under parity=true."},
                      {field("chunk_length", &O::chunk_length, 1, 1e9, "slots per chunk (the last one may be shorter)"),
                       field("parity", &O::parity,
                             "score each chunk as a context of its own, as kvpress: expected_attention takes its query statistics "
                             "from the chunk's rows and its future positions from the chunk's length (needs the whole context in "
                             "the last prefill chunk)")},
                      [](const O& o, PressList inner) { return std::make_unique<ChunkPress>(std::move(inner.at(0)), o.chunk_length, o.parity); });
}

}  // namespace kvsqueeze
