// pyramid_merge: the seed's pyramidal pairwise pooling (en-jai-neer/kv-cache-compression,
// docs/METHODS.md §6.1; the maths in pyramid_merge_math.h). Nothing is scored or evicted: per
// (layer, KV head), pairs of consecutive slots past the sinks are pooled into one slot, so that
// at most W_k = int(L0 (1 + (k/m)(1/beta - 1))) slots of layer k stay unmerged.
//  - After the context (its last chunk), the seed's prefill loop: rws = sink; while
//    len - rws > W_k: halve [sink, rws + W_k), rws = sink + halved; then rws = len (as coded;
//    rws stays at sink when nothing was halved). skip_prefill_compression only sets rws = sink.
//  - While decoding, triggers() fires once len - rws > W_k: the whole post-sink region (older
//    merged slots included) is halved once and rws = len. The cache then oscillates between
//    about sink + W_k + 1 and sink + 2 W_k + 2 slots. compresses_while_decoding(): the pipeline
//    runs this rule with just --press pyramid_merge.
// Per (layer, KV head) the press keeps rws and, for weighted_mean, how many tokens each slot
// stands for (1 for a token never pooled; a pooled slot the sum over its pair), remapped at every
// pooling. That state is tied to the run's positions as they were after the press last pooled: a
// run that no longer starts with them (a new sequence, a restored copy of the context) falls back
// to the state right after the prefill rule when that still matches, else to a fresh start.
// Pooled rows are written with KvCache::rewrite_rows after the layer is compacted to
// [sinks | pooled | rest], so the positions stay strictly ascending: a pooled slot takes the
// position of the later slot of its pair.
#include <algorithm>
#include <climits>
#include <map>
#include <numeric>

#include "kvsqueeze/error.h"
#include "press/press_registry.h"
#include "press/pyramid_merge_math.h"

namespace kvsqueeze {
namespace {

namespace pm = pyramid_merge;

struct PyramidMergeOptions {
  int64_t initial_local_window = 512;
  double steepness_coefficient = 1.0;
  int64_t sink_tokens = 4;
  std::string seq_pooling_type = "mean";
  bool skip_prefill_compression = false;
};

class PyramidMergePress : public Press {
 public:
  PyramidMergePress(int64_t l0, double beta, int64_t sink, pm::Pooling pooling, bool skip_prefill)
      : l0_(l0), beta_(beta), sink_(sink), pooling_(pooling), skip_prefill_(skip_prefill) {}
  std::string name() const override { return "pyramid_merge"; }
  // Between two decoding-time poolings a run grows by at most W_k + 1 slots (known once a
  // layer of the model was observed, which precedes every compression).
  PressTraits traits() const override {
    return {.own_budget = true, .compresses_while_decoding = true, .decode_slack = decode_slack_};
  }

  // A chunk starting at position 0 begins a new sequence: forget the layer's state.
  void observe(const LayerView& v) override {
    if (decode_slack_ == 0) decode_slack_ = slack(v.config());
    if (!v.stats.positions.empty() && v.stats.positions.front() == 0) state_.erase(v.layer);
  }

  // Before the first pooling of a sequence: the context's last chunk (the prefill rule; also
  // the first decoding step when another press compressed the context). Then the decode rule.
  bool triggers(const LayerView& v) const override {
    if (v.config().layer_sliding[static_cast<size_t>(v.layer)]) return false;
    const auto it = state_.find(v.layer);
    if (it == state_.end()) return v.stats.last_chunk;
    const int64_t w = window(v.layer, v.config().n_layer);
    for (int64_t h = 0; h < v.n_head_kv(); ++h)
      if (v.length(h) - current(v, h).rws > w) return true;
    return false;
  }

  KeepSets compress(const LayerView& v, const Budget&, KvCache& cache) override {
    const int64_t w = window(v.layer, v.config().n_layer);
    const bool first = state_.find(v.layer) == state_.end();
    std::vector<HeadState> next(static_cast<size_t>(v.n_head_kv()));
    KeepSets keep(static_cast<size_t>(v.n_head_kv()));
    for (int64_t h = 0; h < v.n_head_kv(); ++h) {
      const int64_t len = v.length(h), sink = std::min(sink_, len);
      const Current cur = first ? Current{sink, {}} : current(v, h);
      pm::Run r;
      r.dk = v.head_dim_k();
      r.dv = v.head_dim_v();
      r.pos.assign(v.positions(h).begin(), v.positions(h).end());
      r.count.assign(static_cast<size_t>(len), 1.0f);
      if (cur.counts)
        std::copy_n(cur.counts->begin(), std::min(static_cast<size_t>(len), cur.counts->size()), r.count.begin());
      int64_t rws = cur.rws, rest_begin = len;
      const bool pools = first ? !skip_prefill_ && len - sink > w : len - rws > w;
      if (pools) {
        r.k = v.keys(h);
        r.v = v.values(h);
        if (first) {
          const auto res = pm::prefill(r, sink, w, pooling_);
          rws = res.rws;
          rest_begin = res.rest_begin;
        } else {
          pm::decode_step(r, rws, sink, w, pooling_);
        }
      } else if (first) {
        rws = sink;
      }
      // [sinks | pooled | rest]: compact to the right number of slots first, then write the
      // pooled rows (their positions lie beyond the slots they replace).
      const int64_t pooled = r.len() - sink - (len - rest_begin);
      auto& kh = keep[static_cast<size_t>(h)];
      kh.resize(static_cast<size_t>(sink + pooled));
      std::iota(kh.begin(), kh.end(), 0);
      for (int64_t i = rest_begin; i < len; ++i) kh.push_back(static_cast<int32_t>(i));
      if (pools) {
        if (static_cast<int64_t>(kh.size()) != len) cache.compact(v.layer, h, kh);
        cache.rewrite_rows(v.layer, h, sink, pooled, r.k.data() + sink * r.dk, r.v.data() + sink * r.dv, r.pos.data() + sink);
      }
      auto& st = next[static_cast<size_t>(h)];
      st.pos = std::move(r.pos);
      st.rws = rws;
      if (pooling_ == pm::Pooling::WeightedMean) st.count = std::move(r.count);
    }
    auto& ls = state_[v.layer];
    if (first) ls.after_prefill = next;
    ls.last = std::move(next);
    return keep;
  }

 private:
  int64_t slack(const ModelConfig& c) const {
    int64_t w = 0;
    for (int64_t l = 0; l < c.n_layer; ++l)
      if (!c.layer_sliding[static_cast<size_t>(l)]) w = std::max(w, window(l, c.n_layer));
    return w + 1;
  }
  int64_t decode_slack_ = 0;
  struct HeadState {
    std::vector<int32_t> pos;  // the run's positions after the press last pooled (or set rws)
    std::vector<float> count;  // tokens per slot of `pos` (weighted_mean only)
    int64_t rws = 0;
  };
  struct LayerState {
    std::vector<HeadState> last, after_prefill;
  };
  struct Current {
    int64_t rws = 0;
    const std::vector<float>* counts = nullptr;  // null: every slot stands for one token
  };

  int64_t window(int64_t layer, int64_t n_layer) const { return pm::local_window(l0_, beta_, layer, n_layer); }

  // Whether the run of head h still holds what `s` recorded (possibly with slots appended, or
  // rolled back to fewer slots).
  static bool matches(const LayerView& v, int64_t h, const std::vector<HeadState>& states) {
    if (static_cast<size_t>(h) >= states.size()) return false;
    const auto& s = states[static_cast<size_t>(h)];
    const auto pos = v.positions(h);
    const size_t n = std::min(pos.size(), s.pos.size());
    return std::equal(pos.begin(), pos.begin() + static_cast<std::ptrdiff_t>(n), s.pos.begin());
  }

  // rws and the token counts of head h from the latest matching state (see the file comment).
  Current current(const LayerView& v, int64_t h) const {
    const int64_t len = v.length(h), sink = std::min(sink_, len);
    const auto it = state_.find(v.layer);
    if (it != state_.end())
      for (const auto* states : {&it->second.last, &it->second.after_prefill})
        if (matches(v, h, *states)) {
          const auto& s = (*states)[static_cast<size_t>(h)];
          return {std::clamp(s.rws, sink, std::max(sink, len)), s.count.empty() ? nullptr : &s.count};
        }
    return {sink, nullptr};
  }

  int64_t l0_;
  double beta_;
  int64_t sink_;
  pm::Pooling pooling_;
  bool skip_prefill_;
  std::map<int64_t, LayerState> state_;  // per layer
};

}  // namespace

void register_pyramid_merge_press() {
  using O = PyramidMergeOptions;
  PressInfo info{
      "pyramid_merge",
      "Pools pairs of consecutive slots past the sinks (mean, max, a per-channel vote, or a token-weighted mean) so that "
      "layer k keeps at most W_k = int(L0 (1 + (k/m)(1/beta - 1))) slots unmerged; after the context and again whenever "
      "more than W_k slots lie past the last pooling while decoding (the seed, en-jai-neer/kv-cache-compression). Sets its own budget.",
      {},
      0,
      "Keys are pooled post-RoPE as cached, as the seed does: an averaged key corresponds to no single position. Positions "
      "stay absolute (the seed passes none): a pooled slot takes the position of the later slot of its pair. While "
      "decoding only the post-sink region is pooled: the seed's compress_decode also pools its sinks and prepends them "
      "again (compress2d ignores its start; with an odd sink count it fails), a defect not reproduced. After the context, "
      "decoding-time pooling settles each run between sink + W_k + 1 and sink + 2 W_k + 2 slots, or one more when the "
      "prefill left more than W_k + 1 unmerged slots. `ratio` and budget options are not used. weighted_mean is kvsqueeze's addition: each slot "
      "counts the tokens it stands for, kept by the press per (layer, head). A window W_k below 1 is taken as 1 (the "
      "seed's prefill loop would not end). skip_prefill_compression is named by the seed's README but does not exist "
      "there. Decoding-time pooling needs no decode flag; sliding-window layers are left alone."};
  register_press<O>(
      std::move(info),
      {field("initial_local_window", &O::initial_local_window, 1, 1e9, "L0: the unmerged window of layer 0"),
       field("steepness_coefficient", &O::steepness_coefficient, 0, 1e9,
             "beta > 0: the last layers' windows approach L0 / beta (1: every layer L0; < 1: wider windows in deeper layers)"),
       field("sink_tokens", &O::sink_tokens, 0, 1e9, "first slots of each run never pooled"),
       field("seq_pooling_type", &O::seq_pooling_type, {"mean", "max", "best", "weighted_mean"},
             "mean: (x0 + x1) / 2; max: element-wise; best: per channel, x0 for every pair if x0 > x1 in at least half the pairs "
             "of the span, else x1 (K and V vote separately); weighted_mean: mean weighted by the tokens each slot stands for "
             "(kvsqueeze's own)"),
       field("skip_prefill_compression", &O::skip_prefill_compression, "leave the context whole; pool only while decoding")},
      [](const O& o) -> std::unique_ptr<Press> {
        const double beta = o.steepness_coefficient;
        if (!(beta > 0.0)) throw Error("press 'pyramid_merge' option 'steepness_coefficient' must be > 0, got " + std::to_string(beta));
        return std::make_unique<PyramidMergePress>(o.initial_local_window, beta, o.sink_tokens, pm::parse_pooling(o.seq_pooling_type),
                                                   o.skip_prefill_compression);
      });
}

}  // namespace kvsqueeze
