// Compactor (kvpress CompactorPress, docs/METHODS.md §3.12): on the middle slots (all but the
// first sink_size_start and the last sink_size_end), blending · z(leverage) + z(non-causal
// attention), each z-scored over the middle slots of all heads. blending defaults to the
// compression ratio (the budget given to set_budget() or select()). The end slots are protected.
#include <optional>

#include "press/leverage_math.h"
#include "press/non_causal_math.h"
#include "press/press_registry.h"

namespace kvsqueeze {
namespace {

struct CompactorOptions {
  int64_t sink_size_start = 8;
  int64_t sink_size_end = 4;
  int64_t sketch_dimension = 48;
  double blending = -1;
  int64_t chunk_size = 256;  // the attention part (non_causal::Options)
  double scale = 1.0;
  bool parity = false;
  int64_t seed = 42;
  std::string output = "blend";
};

class CompactorPress : public Press {
 public:
  CompactorPress(int64_t start, int64_t end, int64_t k, double blending, non_causal::Options nc, uint64_t seed, std::string output)
      : start_(start), end_(end), k_(k), blending_(blending), nc_(nc), seed_(seed), output_(std::move(output)) {}
  std::string name() const override { return "compactor"; }
  StatsRequest needs() const override { return qstats::all_query_rows(); }
  void observe(const LayerView& v) override { log_.observe(v); }
  void set_budget(const Budget& budget) override { budget_ = budget; }
  KeepSets select(const LayerView& v, const Budget& budget) override {
    set_budget(budget);
    return Press::select(v, budget);
  }
  LayerScores score(const LayerView& v) override {
    LayerScores out(static_cast<size_t>(v.n_head_kv()));
    std::vector<int64_t> lo(out.size()), hi(out.size());
    for (size_t h = 0; h < out.size(); ++h) {
      const int64_t len = v.length(static_cast<int64_t>(h));
      lo[h] = std::min(start_, len);
      hi[h] = len - std::min(end_, std::max<int64_t>(0, len - lo[h]));
    }
    const int64_t right = v.n_head_kv() > 0 ? v.length(0) - hi[0] : 0;
    LayerScores lev, att;
    if (output_ != "non_causal") lev = leverage::layer_scores(v, lo[0], right, k_, seed_);
    if (output_ != "leverage") att = non_causal::layer_scores(v, log_.at(v, "compactor"), lo[0], right, nc_);
    const double blend = blending_ >= 0 ? blending_ : budget_ratio(v);
    for (size_t h = 0; h < out.size(); ++h) {
      auto& s = out[h];
      s.assign(static_cast<size_t>(v.length(static_cast<int64_t>(h))), INFINITY);
      for (int64_t i = lo[h]; i < hi[h]; ++i) {
        const auto j = static_cast<size_t>(i - lo[h]);
        s[static_cast<size_t>(i)] = output_ == "leverage" ? lev[h][j]
                                    : output_ == "non_causal" ? att[h][j]
                                                              : static_cast<float>(blend * lev[h][j] + att[h][j]);
      }
    }
    return out;
  }

 private:
  int64_t start_, end_, k_;
  double blending_;
  non_causal::Options nc_;
  uint64_t seed_;
  std::string output_;
  std::optional<Budget> budget_;

  // blending = cr: the budget's ratio, or for an absolute budget the fraction it removes;
  // kvpress's 0.35 when no budget was given (score() alone).
  double budget_ratio(const LayerView& v) const {
    if (!budget_) return 0.35;
    if (budget_->tokens >= 0)
      return v.n_head_kv() > 0 && v.length(0) > 0 ? std::max(0.0, 1.0 - static_cast<double>(budget_->tokens) / static_cast<double>(v.length(0))) : 0.0;
    return budget_->ratio;
  }
  qstats::QueryLog log_;
};

}  // namespace

void register_compactor_press() {
  using O = CompactorOptions;
  register_press<O>(
      {"compactor", "Blend of key leverage and non-causal chunked attention on the middle slots (Compactor).", {}, 0,
       "End slots score +inf (kvpress pads them with the maximum middle score, which can tie). blending = "
       "compression ratio comes from the budget (Press::set_budget, forwarded by wrappers such as adakv; an "
       "absolute budget: the fraction it removes; score() alone: kvpress's 0.35). The attention part masks the last chunk's padding unless parity=true; "
       "the sketch is kvsqueeze's seeded one (see leverage_score)."},
      {field("sink_size_start", &O::sink_size_start, 0, 1e6, "first slots kept"),
       field("sink_size_end", &O::sink_size_end, 0, 1e6, "last slots kept"),
       field("chunk_size", &O::chunk_size, 1, 1e7, "slots per chunk of non-causal attention"),
       field("sketch_dimension", &O::sketch_dimension, 1, 4096, "columns of the Gaussian sketch of the leverage part"),
       field("blending", &O::blending, -1, 1e6, "weight of the leverage z-score; -1: the compression ratio (kvpress default)"),
       field("scale", &O::scale, 0, 1e6, "multiplies q.k in the attention part (kvpress: 1)"),
       field("parity", &O::parity, "kvpress's padding of the last attention chunk (see non_causal_attn)"),
       seed_field(&O::seed, "seed of the sketch (counter-based, per layer and head)"),
       field("output", &O::output, {"blend", "leverage", "non_causal"}, "scores returned: the blend, or one part (diagnostics)")},
      [](const O& o) {
        non_causal::Options nc;
        nc.chunk = o.chunk_size;
        nc.scale = o.scale;
        nc.parity = o.parity;
        return std::make_unique<CompactorPress>(o.sink_size_start, o.sink_size_end, o.sketch_dimension, o.blending, nc,
                                                static_cast<uint64_t>(o.seed), o.output);
      });
}

}  // namespace kvsqueeze
