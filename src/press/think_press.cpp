// ThinK (arXiv 2407.21018, kvpress ThinKPress): prunes key *channels*, not tokens. Per KV head,
// channel c scores mean_t(q_{t,c}^2) (the last window_size queries, RoPE applied at their true
// positions, averaged over the G query heads) times mean_i(k_{i,c}^2) (every cached key), and
// the floor(d * key_channel_compression_ratio) lowest channels are pruned.
//
// kvpress only zeroes those channels, so it saves no memory. Here the run really stores the kept
// channels only (KvCache::keep_key_channels): q.k over them equals kvpress's dot product with
// the zeroed prefix keys. Keys appended later (the question, the answer) are stored pruned too,
// where kvpress keeps them at full width: attention to those later tokens differs from kvpress.
// No slot is evicted; the press's budget is ignored.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend/host_math.h"
#include "kvsqueeze/error.h"
#include "press/press_registry.h"

namespace kvsqueeze {
namespace {

struct ThinkOptions {
  double key_channel_compression_ratio = 0.0;
  int64_t window_size = 32;
};

class ThinkPress : public Press {
 public:
  ThinkPress(double ratio, int64_t window) : ratio_(ratio), window_(window) {}
  std::string name() const override { return "think"; }
  PressTraits traits() const override { return {.own_budget = true}; }  // key_channel_compression_ratio decides; no token is evicted
  StatsRequest needs() const override { return {.pre_rope_query_rows = window_}; }

  // Keeps the last window_size queries of the context, RoPE applied, across prefill chunks.
  void observe(const LayerView& v) override {
    if (v.config().layer_sliding[static_cast<size_t>(v.layer)]) return;  // never compressed
    const auto& st = v.stats;
    const int64_t hq = v.config().n_head, d = v.head_dim_k(), half = d / 2, rows = st.pre_rope_rows;
    if (rows <= 0 || static_cast<int64_t>(st.pre_rope_queries.size()) != rows * hq * d)
      throw Error("think: the window queries were not computed for layer " + std::to_string(v.layer));
    auto& win = windows_[v.layer];
    // A chunk that starts the run starts a new context: forget the previous one's queries.
    const auto pos = v.positions(0);
    if (!pos.empty() && !st.positions.empty() && pos.front() == st.positions.front()) win.clear();
    const int32_t* qpos = st.positions.data() + st.positions.size() - static_cast<size_t>(rows);
    std::vector<float> c(static_cast<size_t>(rows * half)), s(c.size());
    host::rope_tables(qpos, rows, v.inv_freq().data(), d, c.data(), s.data());
    const auto style = host::rope_style(v.config().rope_neox);
    std::vector<float> q(st.pre_rope_queries);
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t h = 0; h < hq; ++h)
        host::rope_apply(q.data() + (t * hq + h) * d, d, c.data() + t * half, s.data() + t * half, style);
    win.insert(win.end(), q.begin(), q.end());
    const auto keep = static_cast<size_t>(window_ * hq * d);
    if (win.size() > keep) win.erase(win.begin(), win.end() - static_cast<std::ptrdiff_t>(keep));
  }

  // [KV head][channel]: mean over the window of q^2 (group-averaged) times mean over slots of k^2.
  std::vector<std::vector<float>> channel_scores(const LayerView& v) const {
    const auto it = windows_.find(v.layer);
    if (it == windows_.end()) throw Error("think: layer " + std::to_string(v.layer) + " was not observed");
    const int64_t hq = v.config().n_head, hkv = v.n_head_kv(), group = hq / hkv, d = v.head_dim_k();
    const auto& win = it->second;
    const int64_t rows = static_cast<int64_t>(win.size()) / (hq * d);
    std::vector<std::vector<float>> out(static_cast<size_t>(hkv));
    for (int64_t h = 0; h < hkv; ++h) {
      std::vector<double> qn(static_cast<size_t>(d), 0.0), kn(static_cast<size_t>(d), 0.0);
      for (int64_t g = 0; g < group; ++g)
        for (int64_t t = 0; t < rows; ++t)
          for (int64_t i = 0; i < d; ++i) {
            const double x = win[static_cast<size_t>((t * hq + h * group + g) * d + i)];
            qn[static_cast<size_t>(i)] += x * x / static_cast<double>(rows) / static_cast<double>(group);
          }
      const std::vector<float> k = v.keys(h);  // pruned channels read 0
      const int64_t len = v.length(h);
      for (int64_t j = 0; j < len; ++j)
        for (int64_t i = 0; i < d; ++i) {
          const double x = k[static_cast<size_t>(j * d + i)];
          kn[static_cast<size_t>(i)] += x * x;
        }
      auto& o = out[static_cast<size_t>(h)];
      o.resize(static_cast<size_t>(d));
      for (int64_t i = 0; i < d; ++i)
        o[static_cast<size_t>(i)] =
            static_cast<float>(qn[static_cast<size_t>(i)] * (len > 0 ? kn[static_cast<size_t>(i)] / static_cast<double>(len) : 0.0));
    }
    return out;
  }

  // Per KV head, the channels kept: all but the floor(d * ratio) lowest-scoring (ties: the
  // lower channel is pruned first), ascending. A quantized key cache stores whole blocks of
  // `block` channels, so the count kept rounds up to one (the next best channels stay).
  std::vector<std::vector<int32_t>> kept_channels(const LayerView& v, int64_t block) const {
    const int64_t d = v.head_dim_k();
    const auto asked = static_cast<int64_t>(std::trunc(static_cast<double>(d) * ratio_));
    const int64_t n_pruned = d - (d - asked + block - 1) / block * block;
    std::vector<std::vector<int32_t>> out;
    for (const auto& s : channel_scores(v)) {
      std::vector<int32_t> order(static_cast<size_t>(d));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
        return s[static_cast<size_t>(a)] < s[static_cast<size_t>(b)];
      });
      std::vector<int32_t> kept(order.begin() + n_pruned, order.end());
      std::sort(kept.begin(), kept.end());
      out.push_back(std::move(kept));
    }
    return out;
  }

  KeepSets compress(const LayerView& view, const Budget& budget, KvCache& cache) override {
    (void)budget;
    // A fresh view: a composed press before this one may have compacted the runs.
    const LayerView v(view.model, view.layer, cache, view.stats);
    KeepSets all(static_cast<size_t>(v.n_head_kv()));
    for (int64_t h = 0; h < v.n_head_kv(); ++h) {
      all[static_cast<size_t>(h)].resize(static_cast<size_t>(v.length(h)));
      std::iota(all[static_cast<size_t>(h)].begin(), all[static_cast<size_t>(h)].end(), 0);
    }
    if (static_cast<int64_t>(std::trunc(static_cast<double>(v.head_dim_k()) * ratio_)) == 0) return all;
    const auto kept = kept_channels(v, kv_block_elems(cache.shape().k_type));
    for (int64_t h = 0; h < v.n_head_kv(); ++h) {
      // Channels pruned before (a second ThinK pass) stay pruned.
      const auto current = cache.key_channels(v.layer, h);
      std::vector<int32_t> keep;
      for (int32_t c : kept[static_cast<size_t>(h)])
        if (current.empty() || std::binary_search(current.begin(), current.end(), c)) keep.push_back(c);
      if (keep.empty()) keep.push_back(current.empty() ? kept[static_cast<size_t>(h)].back() : current.back());
      cache.keep_key_channels(v.layer, h, keep);
    }
    return all;
  }

 private:
  double ratio_;
  int64_t window_;
  std::map<int64_t, std::vector<float>> windows_;  // layer -> rows x n_head x d post-RoPE queries
};

}  // namespace

// For tests: the channel scores and kept channels of a think press on a layer.
std::vector<std::vector<float>> think_channel_scores(Press& press, const LayerView& view) {
  auto* p = dynamic_cast<ThinkPress*>(&press);
  if (!p) throw Error("think_channel_scores: not a think press");
  return p->channel_scores(view);
}

void register_think_press() {
  using O = ThinkOptions;
  register_press<O>({"think", "Prunes the lowest-scoring key channels of every head (ThinK); evicts no token.", {}, 0,
                     "Memory is really freed: pruned heads store only their kept key channels (kvpress only zeroes them "
                     "and saves nothing, while reporting cr = ratio/2). Keys appended after compression are stored pruned "
                     "too, where kvpress keeps them at full width. Ignores the token budget."},
                    {field("key_channel_compression_ratio", &O::key_channel_compression_ratio, 0.0, 0.999,
                           "fraction of key channels removed (floor(d * ratio))"),
                     field("window_size", &O::window_size, 1, 1e6, "last queries whose q^2 scores the channels")},
                    [](const O& o) { return std::make_unique<ThinkPress>(o.key_channel_compression_ratio, o.window_size); });
}

}  // namespace kvsqueeze
