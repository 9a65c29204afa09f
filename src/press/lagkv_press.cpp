// LagKV (arXiv 2504.04704; docs/METHODS.md §3.9, §2.2): attention-free scoring of each partition
// of `lag_size` slots against the partition after it (lagkv_math.h). Two flows:
//  - mode=kvpress (kvpress LagKVPress): a one-shot scorer at the end of prefill. Sinks, the
//    last full partition and the remainder are protected; the other partitions score
//    (s_K + s_V) / 2, replaced by their within-partition rank / lag unless cross_scoring; the
//    uniform budget rule then keeps the best floor(len (1 - cr)) slots per head.
//  - mode=lagkv (AI-Lab-China-Merchants-Bank/LagKV): incremental. Per (layer, head) the press
//    remembers where the compressed prefix ends (b, initially n_sink). Once 2 lag slots lie past
//    b, triggers() says so and compress() scores every full partition past b except the newest
//    against its successor with s_K + score_v_ratio s_V, keeps the top k = floor((1-cr) lag) of
//    each and advances b. The layout stays [sinks | kept | tail], the tail between lag and
//    2 lag - 1 slots.
#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "kvsqueeze/error.h"
#include "press/lagkv_math.h"
#include "press/press_registry.h"

namespace kvsqueeze {
namespace {

struct LagKvOptions {
  std::string mode = "kvpress";
  int64_t n_sink = -1;  // -1: the mode's upstream default
  int64_t lag_size = 128;
  bool cross_scoring = false;
  double score_v_ratio = 1.0;
  std::string short_sequence = "keep_all";
  bool parity = false;
};

class LagKvPress : public Press {
 public:
  LagKvPress(bool lagkv_mode, int64_t n_sink, int64_t lag, bool cross, bool streaming_short, double v_ratio, bool parity)
      : lagkv_(lagkv_mode), n_sink_(n_sink), lag_(lag), cross_(cross), streaming_short_(streaming_short), v_ratio_(v_ratio),
        parity_(parity) {}
  std::string name() const override { return "lagkv"; }

  // A chunk starting at position 0 begins a new context: forget the previous prefix ends.
  void observe(const LayerView& v) override {
    if (!v.stats.positions.empty() && v.stats.positions.front() == 0) state_.erase(v.layer);
  }

  LayerScores score(const LayerView& v) override {
    LayerScores out(static_cast<size_t>(v.n_head_kv()));
    for (int64_t h = 0; h < v.n_head_kv(); ++h) out[static_cast<size_t>(h)] = head_scores(v, h);
    return out;
  }

  KeepSets select(const LayerView& v, const Budget& budget) override {
    if (!lagkv_) return Press::select(v, budget);
    KeepSets keep(static_cast<size_t>(v.n_head_kv()));
    for (int64_t h = 0; h < v.n_head_kv(); ++h) {
      const int64_t len = v.length(h), b = prefix_end(v, h);
      auto& kh = keep[static_cast<size_t>(h)];
      if (len - b < 2 * lag_) {  // LagKV does nothing below b + 2 lag
        kh.resize(static_cast<size_t>(len));
        std::iota(kh.begin(), kh.end(), 0);
        continue;
      }
      // Only a compression that happens needs the ratio (a pipeline may hand an absolute budget
      // to a layer this press did not trigger on: that keeps everything, as above).
      if (budget.tokens >= 0)
        throw Error("press 'lagkv' with mode=lagkv keeps a fraction of each partition: give a ratio, not an absolute budget");
      const int64_t k = lagkv::keep_per_partition(budget.ratio, lag_);
      const int64_t m = (len - b) / lag_;
      const auto s = region_scores(v, h, b, m);
      for (int32_t i = 0; i < b; ++i) kh.push_back(i);
      for (int32_t i : lagkv::top_k_per_partition(s, lag_, k)) kh.push_back(static_cast<int32_t>(b + i));
      for (int64_t i = b + (m - 1) * lag_; i < len; ++i) kh.push_back(static_cast<int32_t>(i));
    }
    return keep;
  }

  KeepSets compress(const LayerView& v, const Budget& budget, KvCache& cache) override {
    if (!lagkv_) return Press::compress(v, budget, cache);
    const KeepSets keep = select(v, budget);
    // The new prefix ends where the tail (the newest full partition and the remainder) starts.
    auto& st = state_[v.layer];
    st.resize(static_cast<size_t>(v.n_head_kv()));
    for (int64_t h = 0; h < v.n_head_kv(); ++h) {
      const int64_t len = v.length(h), b = prefix_end(v, h);
      auto& s = st[static_cast<size_t>(h)];
      if (len - b < 2 * lag_) {
        s = {b, b < len ? v.positions(h)[static_cast<size_t>(b)] : -1};
        continue;
      }
      const int64_t tail = b + ((len - b) / lag_ - 1) * lag_;
      const int64_t kept_before_tail = static_cast<int64_t>(keep[static_cast<size_t>(h)].size()) - (len - tail);
      s = {kept_before_tail, v.positions(h)[static_cast<size_t>(tail)]};
    }
    compact_layer(cache, v.layer, keep);
    return keep;
  }

  // Another press compacted the layer: the prefix end follows the slots it kept.
  void compacted(int64_t layer, const KeepSets& keep) override {
    auto it = state_.find(layer);
    if (it == state_.end()) return;
    for (size_t h = 0; h < it->second.size() && h < keep.size(); ++h) {
      auto& s = it->second[h];
      const auto& k = keep[h];
      const auto at = std::lower_bound(k.begin(), k.end(), static_cast<int32_t>(s.end));
      if (at == k.end() || *at != s.end) s.pos = -1;  // the first tail slot went: trust the count
      s.end = at - k.begin();
    }
  }

  bool triggers(const LayerView& v) const override {
    if (!lagkv_ || v.config().layer_sliding[static_cast<size_t>(v.layer)]) return false;
    for (int64_t h = 0; h < v.n_head_kv(); ++h)
      if (v.length(h) - prefix_end(v, h) >= 2 * lag_) return true;
    return false;
  }

 private:
  struct Prefix {
    int64_t end = 0;  // slots of [sinks | kept]
    int32_t pos = -1;  // position of the slot at `end` (the first tail slot) when it was set; -1 unknown
  };

  // Where the compressed prefix of head h ends (slot index): n_sink until LagKV compressed it,
  // then the recorded end, as long as the run still matches it (a rolled-back or new context
  // falls back to n_sink).
  int64_t prefix_end(const LayerView& v, int64_t h) const {
    const int64_t len = v.length(h), sinks = std::min(n_sink_, len);
    if (!lagkv_) return sinks;
    const auto it = state_.find(v.layer);
    if (it == state_.end() || static_cast<size_t>(h) >= it->second.size()) return sinks;
    const Prefix& s = it->second[static_cast<size_t>(h)];
    if (s.end < sinks || s.end > len) return sinks;
    if (s.pos >= 0 && (s.end == len || v.positions(h)[static_cast<size_t>(s.end)] != s.pos)) return sinks;
    return s.end;
  }

  std::vector<float> region_scores(const LayerView& v, int64_t h, int64_t b, int64_t m) const {
    const auto k = v.keys(h), val = v.values(h);
    lagkv::Params p;
    p.lag = lag_;
    p.eps = parity_ ? 0.0 : 1e-6;
    p.kvpress_mean = !lagkv_;
    p.score_v_ratio = v_ratio_;
    p.ranks = !lagkv_ && !cross_;
    return lagkv::region_scores(k.data() + b * v.head_dim_k(), v.head_dim_k(), val.data() + b * v.head_dim_v(), v.head_dim_v(), m, p);
  }

  std::vector<float> head_scores(const LayerView& v, int64_t h) const {
    const int64_t len = v.length(h), b = prefix_end(v, h);
    std::vector<float> s(static_cast<size_t>(len), INFINITY);
    if (len - b < 2 * lag_) {
      // kvpress's "no compression" branch ramps the non-sinks by position, which the budget
      // rule turns into StreamingLLM (short_sequence=streaming); otherwise keep everything.
      if (!lagkv_ && streaming_short_ && len > n_sink_)
        for (int64_t i = n_sink_; i < len; ++i)
          s[static_cast<size_t>(i)] = static_cast<float>(i - n_sink_) / static_cast<float>(len - n_sink_);
      return s;
    }
    const int64_t m = (len - b) / lag_;
    const auto r = region_scores(v, h, b, m);
    std::copy(r.begin(), r.end(), s.begin() + b);
    return s;
  }

  bool lagkv_;
  int64_t n_sink_, lag_;
  bool cross_, streaming_short_;
  double v_ratio_;
  bool parity_;
  std::map<int64_t, std::vector<Prefix>> state_;  // per layer, per KV head (mode=lagkv)
};

}  // namespace

void register_lagkv_press() {
  using O = LagKvOptions;
  register_press<O>(
      {"lagkv",
       "Scores each partition of lag_size slots by how its keys and values spread relative to the next partition (LagKV); "
       "attention- and query-free.",
       {},
       0,
       "Fix: the min-max range of each channel is guarded with max(hi - lo, 1e-6) (parity=true: raw, NaN ranks lowest). "
       "kvpress mode: protected slots (sinks, newest partition, remainder) score +inf instead of 1 (same kept sets); "
       "sequences shorter than n_sink + 2 lag_size are not compressed unless short_sequence=streaming (kvpress's ramp). "
       "lagkv mode: only ratio budgets; sinks default to 16 as in the LagKV repository."},
      {field("mode", &O::mode, {"kvpress", "lagkv"},
             "kvpress: one-shot at prefill, uniform budget over partition scores (kvpress LagKVPress); lagkv: the LagKV "
             "repository's incremental flow, keeping floor((1-cr) lag_size) of each scored partition whenever 2 lag_size slots "
             "are uncompressed (after prefill chunks and decode steps)"),
       field("n_sink", &O::n_sink, -1, 1e9, "first slots never evicted; -1: the mode's upstream default (kvpress 4, lagkv 16)"),
       field("lag_size", &O::lag_size, 1, 1e9, "slots per partition"),
       field("cross_scoring", &O::cross_scoring,
             "mode=kvpress: keep the raw scores, comparable across partitions (for adakv), instead of within-partition ranks"),
       field("score_v_ratio", &O::score_v_ratio, 0, 1e9, "mode=lagkv: weight of the value score (score = s_K + ratio s_V)"),
       field("short_sequence", &O::short_sequence, {"keep_all", "streaming"},
             "mode=kvpress, fewer than n_sink + 2 lag_size slots: keep_all (no compression), or streaming (kvpress's ramp: keeps "
             "the sinks and the most recent slots, as streaming_llm)"),
       field("parity", &O::parity,
             "raw upstream formula: no guard of a constant channel's range (max(hi-lo, 1e-6) otherwise); NaN scores rank lowest")},
      [](const O& o) {
        const bool lagkv_mode = o.mode == "lagkv";
        const int64_t n_sink = o.n_sink >= 0 ? o.n_sink : lagkv_mode ? 16 : 4;
        return std::make_unique<LagKvPress>(lagkv_mode, n_sink, o.lag_size, o.cross_scoring, o.short_sequence == "streaming",
                                            o.score_v_ratio, o.parity);
      });
}

}  // namespace kvsqueeze
