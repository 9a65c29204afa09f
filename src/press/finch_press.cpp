// Finch (Corallo & Papotti, TACL 2024; kvpress FinchPress): query-aware compression of a context
// followed by a question. The window is the question: its window_size tokens (the last ones
// evaluated) score every earlier slot by the attention they pay to it, SnapKV-like but without
// pooling. With normalize_scores, window row i (of w) is multiplied by L - w + i, L the run
// length (kvpress's count of the keys it sees), before the mean over rows; then the mean over
// the G query heads. The question is protected and counts in the budget. With chunk_length the
// budget is applied per chunk of slots (each keeps max(1, int(len * (1 - ratio)))).
//
// kvpress finds the question with a delimiter token it removes in an embedding hook; here the
// caller says how many of the evaluated tokens are the question (window_size).
// With rerotate_keys (kvpress's default) the kept slots are renumbered 0..n-1 and their keys
// re-rotated to match (press/rerotate.h, as key_rerotation): later tokens continue at n. Every
// head and layer keeps the same n here, so that is always possible, except on models with
// sliding-window layers (gemma), which are refused unless rerotate_keys=false.
#include <cmath>

#include "kvsqueeze/error.h"
#include "press/press_registry.h"
#include "press/rerotate.h"

namespace kvsqueeze {
namespace {

struct FinchOptions {
  int64_t window_size = 0;  // the question's length, set by the caller
  bool normalize_scores = true;
  int64_t chunk_length = 0;
  bool rerotate_keys = true;
};

class FinchPress : public Press {
 public:
  FinchPress(int64_t window, bool normalize, int64_t chunk, bool rerotate)
      : window_(window), normalize_(normalize), chunk_(chunk), rerotate_(rerotate) {}
  std::string name() const override { return "finch"; }
  StatsRequest needs() const override { return {.window_queries = window_}; }

  LayerScores score(const LayerView& v) override {
    const int64_t hkv = v.n_head_kv(), group = v.config().n_head / hkv;
    const auto& probs = v.stats.attention;
    const int64_t w = probs.window_rows;
    if (probs.window.empty() || w != window_)
      throw Error("finch: window_size=" + std::to_string(window_) + " question tokens, but the last evaluation held only " +
                  std::to_string(v.stats.positions.size()) + " tokens (the question must be the last window_size tokens evaluated)");
    LayerScores out(static_cast<size_t>(hkv));
    for (int64_t h = 0; h < hkv; ++h) {
      const int64_t len = v.length(h);
      auto& s = out[static_cast<size_t>(h)];
      s.assign(static_cast<size_t>(len), INFINITY);  // the question (and everything, if nothing precedes it)
      if (len <= w) continue;
      const int64_t n = len - w;  // slots before the question
      std::vector<double> mean(static_cast<size_t>(n), 0.0);
      for (int64_t g = 0; g < group; ++g) {
        const auto& p = probs.window[static_cast<size_t>(h * group + g)];
        for (int64_t r = 0; r < w; ++r) {
          const double weight = (normalize_ ? static_cast<double>(len - w + r) : 1.0) / static_cast<double>(w * group);
          for (int64_t i = 0; i < n; ++i) mean[static_cast<size_t>(i)] += p[static_cast<size_t>(r * len + i)] * weight;
        }
      }
      for (int64_t i = 0; i < n; ++i) s[static_cast<size_t>(i)] = static_cast<float>(mean[static_cast<size_t>(i)]);
    }
    return out;
  }

  KeepSets compress(const LayerView& view, const Budget& budget, KvCache& cache) override {
    if (!rerotate_) return Press::compress(view, budget, cache);
    renumbering_.refuse_sliding(view, " (pass finch.rerotate_keys=false to keep them)");
    const KeepSets keep = select(view, budget);
    renumbering_.check(view, keep, "finch");
    compact_layer(cache, view.layer, keep);
    compacted(view.layer, keep);
    rerotate::apply(view, cache);
    next_position_ = renumbering_.next_position();
    return keep;
  }

  KeepSets select(const LayerView& v, const Budget& budget) override {
    if (chunk_ == 0) return Press::select(v, budget);
    if (budget.tokens >= 0) throw Error("finch: chunk_length needs a compression ratio, not an absolute budget");
    if (!(static_cast<double>(chunk_) > static_cast<double>(window_) / (1.0 - budget.ratio)))
      throw Error("finch: chunk_length " + std::to_string(chunk_) + " must exceed window_size / (1 - ratio) = " +
                  std::to_string(static_cast<double>(window_) / (1.0 - budget.ratio)));
    const LayerScores scores = score(v);
    KeepSets out(scores.size());
    for (size_t h = 0; h < scores.size(); ++h) {
      const auto len = static_cast<int64_t>(scores[h].size());
      for (int64_t c0 = 0; c0 < len; c0 += chunk_) {
        const int64_t n = std::min(chunk_, len - c0);
        const LayerScores part{std::vector<float>(scores[h].begin() + c0, scores[h].begin() + c0 + n)};
        const KeepSets kept = top_k_per_head(part, {budget.keep(n)});
        for (int32_t i : kept[0]) out[h].push_back(static_cast<int32_t>(c0) + i);
      }
    }
    return out;
  }

 private:
  int64_t window_;
  bool normalize_;
  int64_t chunk_;
  bool rerotate_;
  rerotate::Renumbering renumbering_{"finch"};
};

}  // namespace

void register_finch_press() {
  using O = FinchOptions;
  register_press<O>(
      {"finch",
       "Query-aware: the question's attention to the context, normalised by the keys each row sees (Finch).",
       {},
       0,
       "The question length is given by window_size instead of kvpress's delimiter token. With rerotate_keys "
       "(default, as kvpress) later tokens continue at the kept count; it is refused on models with sliding-window "
       "layers (gemma), whose uncompressed windows keep their original positions: pass rerotate_keys=false there.",
       /*question_length_option=*/"window_size"},
      {field("window_size", &O::window_size, 0, 1e9, "question tokens at the end of the evaluated ids (set by the caller; required)"),
       field("normalize_scores", &O::normalize_scores, "multiply question row i by the number of keys it sees (L - w + i)"),
       field("chunk_length", &O::chunk_length, 0, 1e9, "> 0: apply the budget per chunk of this many slots (must exceed w / (1 - ratio))"),
       field("rerotate_keys", &O::rerotate_keys,
             "renumber the kept slots 0..n-1 and re-rotate their keys to match (refused on models with sliding-window layers)")},
      [](const O& o) {
        if (o.window_size < 1)
          throw Error("press 'finch' needs window_size, the number of question tokens at the end of the evaluated ids");
        return std::make_unique<FinchPress>(o.window_size, o.normalize_scores, o.chunk_length, o.rerotate_keys);
      });
}

}  // namespace kvsqueeze
