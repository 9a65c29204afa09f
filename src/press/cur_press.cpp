// CUR / CurDKV (kvpress CURPress, docs/METHODS.md §3.13): approximate leverage of keys and values
// from their squared norms, optionally after a random projection to 20 dimensions, each divided
// by its sum within non-overlapping local windows (the tail window zero-padded), combined by
// `leverage_type` and normalised by the total over the run. The first num_sinks slots are
// protected (kvpress scores them 1.0, above any normalised score).
#include <cmath>

#include "press/press_registry.h"
#include "press/query_stats.h"

namespace kvsqueeze {
namespace {

struct CurOptions {
  int64_t num_sinks = 4;
  std::string leverage_type = "kv_product";
  bool use_random_leverage = false;
  bool use_local_approximation = true;
  int64_t local_window_size = 16;
  int64_t seed = 42;
};

class CurPress : public ScorerPress {
 public:
  CurPress(int64_t sinks, std::string type, bool random, bool local, int64_t window, uint64_t seed)
      : sinks_(sinks), type_(std::move(type)), random_(random), local_(local), window_(window), seed_(seed) {}
  std::string name() const override { return "cur"; }
  LayerScores score(const LayerView& v) override {
    const int64_t hkv = v.n_head_kv(), dk = v.head_dim_k(), dv = v.head_dim_v();
    constexpr int64_t r = 20;  // kvpress's projection width
    LayerScores out(static_cast<size_t>(hkv));
    for (int64_t h = 0; h < hkv; ++h) {
      const int64_t len = v.length(h);
      const std::vector<float> keys = v.keys(h), vals = v.values(h);
      auto sq = [&](const std::vector<float>& x, int64_t d) {
        std::vector<double> n2(static_cast<size_t>(len), 0.0);
        if (random_ && d == dk) {
          // G (d x 20) ~ N(0, 1/20), shared by keys and values of this (layer, head), as kvpress.
          for (int64_t i = 0; i < len; ++i)
            for (int64_t c = 0; c < r; ++c) {
              double y = 0;
              for (int64_t a = 0; a < d; ++a)
                y += x[static_cast<size_t>(i * d + a)] *
                     qstats::normal_draw(seed_, static_cast<uint64_t>(v.layer), static_cast<uint64_t>(h), static_cast<uint64_t>(a * r + c)) /
                     std::sqrt(static_cast<double>(r));
              n2[static_cast<size_t>(i)] += y * y;
            }
          return n2;
        }
        for (int64_t i = 0; i < len; ++i)
          for (int64_t a = 0; a < d; ++a) n2[static_cast<size_t>(i)] += static_cast<double>(x[static_cast<size_t>(i * d + a)]) * x[static_cast<size_t>(i * d + a)];
        return n2;
      };
      std::vector<double> k2 = sq(keys, dk), v2 = sq(vals, dv);
      if (local_)
        for (auto* x : {&k2, &v2})
          for (int64_t w0 = 0; w0 < len; w0 += window_) {
            const int64_t w1 = std::min(len, w0 + window_);
            double sum = 0;
            for (int64_t i = w0; i < w1; ++i) sum += (*x)[static_cast<size_t>(i)];
            for (int64_t i = w0; i < w1; ++i) (*x)[static_cast<size_t>(i)] /= sum;
          }
      std::vector<double> s(static_cast<size_t>(len));
      double total = 0;
      for (int64_t i = 0; i < len; ++i) {
        const double a = k2[static_cast<size_t>(i)], b = v2[static_cast<size_t>(i)];
        s[static_cast<size_t>(i)] = type_ == "key" ? a : type_ == "value" ? b : type_ == "kv_avg" ? (a + b) / 2 : a * b;
        total += s[static_cast<size_t>(i)];
      }
      auto& o = out[static_cast<size_t>(h)];
      o.resize(static_cast<size_t>(len));
      for (int64_t i = 0; i < len; ++i) o[static_cast<size_t>(i)] = i < sinks_ ? INFINITY : static_cast<float>(s[static_cast<size_t>(i)] / total);
    }
    return out;
  }

 private:
  int64_t sinks_;
  std::string type_;
  bool random_, local_;
  int64_t window_;
  uint64_t seed_;
};

}  // namespace

void register_cur_press() {
  using O = CurOptions;
  register_press<O>({"cur", "Approximate key/value leverage from squared norms, locally normalised (CurDKV).", {}, 0,
                     "Sinks score +inf instead of 1.0 (same selection). The optional random projection uses "
                     "kvsqueeze's counter-based RNG (seed, layer, head), not torch's."},
                    {field("num_sinks", &O::num_sinks, 0, 1e6, "first slots kept (attention sinks)"),
                     field("leverage_type", &O::leverage_type, {"kv_product", "key", "value", "kv_avg"}, "how key and value leverage combine"),
                     field("use_random_leverage", &O::use_random_leverage, "project keys and values to 20 dimensions with a seeded Gaussian first"),
                     field("use_local_approximation", &O::use_local_approximation, "normalise the squared norms within local windows"),
                     field("local_window_size", &O::local_window_size, 1, 1e6, "width of the local windows"),
                     seed_field(&O::seed, "seed of the random projection")},
                    [](const O& o) {
                      return std::make_unique<CurPress>(o.num_sinks, o.leverage_type, o.use_random_leverage, o.use_local_approximation,
                                                        o.local_window_size, static_cast<uint64_t>(o.seed));
                    });
}

}  // namespace kvsqueeze
