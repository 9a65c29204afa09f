#include "press/head_budget.h"
#include "press/press_registry.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <queue>

#include <nlohmann/json.hpp>

#include "kvsqueeze/error.h"

namespace kvsqueeze::head_budget {

double py_floordiv(double a, double b) {
  double mod = std::fmod(a, b);
  double div = (a - mod) / b;
  if (mod != 0.0) {
    if ((b < 0) != (mod < 0)) div -= 1.0;
  }
  if (div == 0.0) return std::copysign(0.0, a / b);
  double floordiv = std::floor(div);
  if (div - floordiv > 0.5) floordiv += 1.0;
  return floordiv;
}

double py_round(double x) { return std::nearbyint(x); }

std::vector<int64_t> fit_to_total(const std::vector<double>& target, std::vector<int64_t> caps, const std::vector<int64_t>& hi,
                                  int64_t total) {
  const size_t n = caps.size();
  int64_t sum = 0, room = 0;
  for (size_t i = 0; i < n; ++i) {
    caps[i] = std::clamp<int64_t>(caps[i], 0, std::max<int64_t>(0, hi[i]));
    sum += caps[i];
    room += std::max<int64_t>(0, hi[i]);
  }
  total = std::clamp<int64_t>(total, 0, room);
  // Heap entries (gap, index): the largest gap first; equal gaps by the rule of each direction.
  using Entry = std::pair<double, size_t>;
  if (sum < total) {
    auto worse = [](const Entry& a, const Entry& b) { return a.first < b.first || (a.first == b.first && a.second > b.second); };
    std::priority_queue<Entry, std::vector<Entry>, decltype(worse)> q(worse);
    for (size_t i = 0; i < n; ++i)
      if (caps[i] < hi[i]) q.push({target[i] - static_cast<double>(caps[i]), i});
    while (sum < total) {
      const size_t i = q.top().second;
      q.pop();
      ++caps[i], ++sum;
      if (caps[i] < hi[i]) q.push({target[i] - static_cast<double>(caps[i]), i});
    }
  } else if (sum > total) {
    auto worse = [](const Entry& a, const Entry& b) { return a.first < b.first || (a.first == b.first && a.second < b.second); };
    std::priority_queue<Entry, std::vector<Entry>, decltype(worse)> q(worse);
    for (size_t i = 0; i < n; ++i)
      if (caps[i] > 0) q.push({static_cast<double>(caps[i]) - target[i], i});
    while (sum > total) {
      const size_t i = q.top().second;
      q.pop();
      --caps[i], --sum;
      if (caps[i] > 0) q.push({static_cast<double>(caps[i]) - target[i], i});
    }
  }
  return caps;
}

AdaKvOriginal adakv_original_caps(const std::vector<std::vector<float>>& scores, const std::vector<int64_t>& base, double alpha,
                                  bool normalize) {
  const size_t H = scores.size();
  struct Slot {
    float s;
    int32_t head, i;
  };
  std::vector<Slot> all;
  int64_t total = 0;
  for (size_t h = 0; h < H; ++h) {
    const auto& s = scores[h];
    total += base[h];
    float weight = 1.0f;
    if (normalize) {  // the mass of the head's top B'_h over its whole mass
      std::vector<float> sorted(s.begin(), s.end());
      std::sort(sorted.begin(), sorted.end(), std::greater<>());
      double top = 0, sum = 0;
      for (size_t j = 0; j < sorted.size(); ++j) {
        sum += sorted[j];
        if (static_cast<int64_t>(j) < base[h]) top += sorted[j];
      }
      weight = sum != 0.0 ? static_cast<float>(static_cast<float>(top) / static_cast<float>(sum)) : 1.0f;
    }
    for (size_t j = 0; j < s.size(); ++j) {
      const float x = std::isnan(s[j]) ? -INFINITY : s[j] * weight;
      all.push_back({x, static_cast<int32_t>(h), static_cast<int32_t>(j)});
    }
  }
  const auto better = [](const Slot& a, const Slot& b) {
    if (a.s != b.s) return a.s > b.s;
    if (a.i != b.i) return a.i > b.i;
    return a.head > b.head;
  };
  const auto take = static_cast<size_t>(std::clamp<int64_t>(total, 0, static_cast<int64_t>(all.size())));
  if (take < all.size()) std::nth_element(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(take), all.end(), better);
  AdaKvOriginal r;
  r.counts.assign(H, 0);
  for (size_t j = 0; j < take; ++j) ++r.counts[static_cast<size_t>(all[j].head)];
  // Upstream: an int64 count times the Python float (1 - alpha) gives a float32 tensor, plus
  // the int floor, rounded half to even.
  const auto keep_share = static_cast<float>(1.0 - alpha);
  for (size_t h = 0; h < H; ++h) {
    const auto floor_h = static_cast<int64_t>(std::trunc(static_cast<double>(base[h]) * alpha));
    const float x = static_cast<float>(r.counts[h]) * keep_share + static_cast<float>(floor_h);
    r.target.push_back(static_cast<double>(x));
    r.raw.push_back(static_cast<int64_t>(py_round(static_cast<double>(x))));
  }
  return r;
}

HeadCaps headkv_caps(const std::vector<double>& scores, int64_t base, double beta, double temp) {
  const size_t N = scores.size();
  double total = 0;
  for (double s : scores) total += s;  // Python's sum(): left to right
  if (!(total > 0) || !std::isfinite(total)) throw Error("headkv: the head scores sum to " + std::to_string(total) + "; need a positive sum");
  std::vector<double> p(N);
  double psum = 0;
  for (size_t i = 0; i < N; ++i) {
    p[i] = std::pow(scores[i] / total, temp);
    psum += p[i];
  }
  const double B = static_cast<double>(base);
  const double share = py_floordiv(B, beta);
  const double pool = share * static_cast<double>(N);
  const double min_n = B - share;
  HeadCaps r;
  for (size_t i = 0; i < N; ++i) {
    const double x = p[i] / psum * pool + min_n;
    r.target.push_back(x);
    r.raw.push_back(static_cast<int64_t>(py_round(x)));
  }
  return r;
}

HeadCaps dililazykv_caps(const std::vector<double>& scores, int64_t per_layer, int64_t base, double beta, double temp) {
  const size_t N = scores.size();
  if (per_layer <= 0 || N % static_cast<size_t>(per_layer) != 0) throw Error("internal: dililazykv needs whole layers of heads");
  // float32 throughout, as upstream (torch.float32 tensors, Python scalars cast to float).
  std::vector<float> S(N), Sp(N);
  for (size_t i = 0; i < N; ++i) S[i] = std::pow(static_cast<float>(scores[i]), static_cast<float>(temp));
  const auto eps = static_cast<float>(1e-9), eps_l = 0.01f;
  double global = 0;
  for (size_t l0 = 0; l0 < N; l0 += static_cast<size_t>(per_layer)) {
    double layer = 0;
    for (size_t i = l0; i < l0 + static_cast<size_t>(per_layer); ++i) layer += S[i];
    const float layer_sum = static_cast<float>(layer) + eps;
    for (size_t i = l0; i < l0 + static_cast<size_t>(per_layer); ++i) {
      Sp[i] = S[i] + eps_l * (S[i] / layer_sum);
      global += Sp[i];
    }
  }
  const float global_sum = static_cast<float>(global) + eps;
  const double B = static_cast<double>(base);
  const double share = py_floordiv(B, beta);
  const auto pool = static_cast<float>(std::max(0.0, share * static_cast<double>(N) - static_cast<double>(N) * 0.5));
  const auto min_n = static_cast<float>(B - share);
  HeadCaps r;
  for (size_t i = 0; i < N; ++i) {
    float x = (Sp[i] / global_sum) * pool;
    x = x + min_n;
    x = x + 0.5f;
    r.target.push_back(static_cast<double>(x));
    r.raw.push_back(static_cast<int64_t>(py_round(static_cast<double>(x))));
  }
  return r;
}


namespace {

class HeadFilePress : public wrapper::Single {
 public:
  HeadFilePress(std::string name, Formula f, std::unique_ptr<Press> inner, HeadFileOptions o)
      : Single(std::move(inner)), name_(std::move(name)), formula_(f), o_(std::move(o)), file_(read_head_scores(o_.head_scores, o_.metric)) {
    reject_deferred(name_);
  }
  std::string name() const override { return name_; }
  LayerScores score(const LayerView& view) override { return inner_->score(view); }

  KeepSets select(const LayerView& view, const Budget& budget) override {
    inner_->set_budget(budget);
    const LayerScores scores = inner_->score(view);
    const int64_t H = view.n_head_kv();
    if (view.config().layer_sliding[static_cast<size_t>(view.layer)]) return inner_->select(view, budget);
    std::vector<int64_t> prot(static_cast<size_t>(H)), len(static_cast<size_t>(H));
    int64_t n_sum = 0, w = 0, len_max = 0;
    for (int64_t h = 0; h < H; ++h) {
      const auto& s = scores.at(static_cast<size_t>(h));
      len[static_cast<size_t>(h)] = view.length(h);
      prot[static_cast<size_t>(h)] = std::count(s.begin(), s.end(), INFINITY);
      n_sum += budget.keep(view.length(h));
      w = std::max(w, prot[static_cast<size_t>(h)]);
      len_max = std::max(len_max, view.length(h));
    }
    // B: the layer's average per-head budget less the protected slots (the scorer's window,
    // kept on top of the allocated cap as upstream keeps its window).
    const int64_t base = std::max<int64_t>(0, n_sum / H - w), available = std::max<int64_t>(0, len_max - w);
    const auto& row = caps(view.model, base, available).at(static_cast<size_t>(view.layer));
    std::vector<int64_t> cap(row.begin(), row.end()), hi(static_cast<size_t>(H));
    for (int64_t h = 0; h < H; ++h) hi[static_cast<size_t>(h)] = len[static_cast<size_t>(h)] - prot[static_cast<size_t>(h)];
    if (o_.parity && base > available) {  // upstream: a prompt shorter than B is not compressed
      for (int64_t h = 0; h < H; ++h) cap[static_cast<size_t>(h)] = hi[static_cast<size_t>(h)];
    } else if (!o_.parity) {
      // Heads of this layer shorter than the others (a ragged cache while decoding): what they
      // cannot use goes to the layer's other heads.
      bool over = false;
      int64_t sum = 0;
      for (int64_t h = 0; h < H; ++h) over = over || cap[static_cast<size_t>(h)] > hi[static_cast<size_t>(h)], sum += cap[static_cast<size_t>(h)];
      if (over) cap = fit_to_total(std::vector<double>(row.begin(), row.end()), cap, hi, sum);
    }
    std::vector<int64_t> counts;
    for (int64_t h = 0; h < H; ++h)
      counts.push_back(prot[static_cast<size_t>(h)] + std::clamp<int64_t>(cap[static_cast<size_t>(h)], 0, hi[static_cast<size_t>(h)]));
    return top_k_per_head(scores, counts);
  }

  const std::vector<std::vector<int64_t>>& caps(const Model& model, int64_t base, int64_t available) {
    const auto key = std::make_pair(base, available);
    if (auto it = caps_.find(key); it != caps_.end()) return it->second;
    const auto& c = model.config();
    if (kv_scores_.empty()) {
      check_model(file_, model);
      kv_scores_ = kv_head_scores(file_, c.n_layer, c.n_head, c.n_head_kv);
    }
    std::vector<double> s;
    for (int64_t l = 0; l < c.n_layer; ++l)
      if (!c.layer_sliding[static_cast<size_t>(l)]) s.insert(s.end(), kv_scores_[static_cast<size_t>(l)].begin(), kv_scores_[static_cast<size_t>(l)].end());
    const HeadCaps hc = formula_ == Formula::HeadKV ? headkv_caps(s, base, o_.beta, o_.temp) : dililazykv_caps(s, c.n_head_kv, base, o_.beta, o_.temp);
    std::vector<int64_t> flat = hc.raw;
    if (!o_.parity)
      flat = fit_to_total(hc.target, hc.raw, std::vector<int64_t>(s.size(), available), base * static_cast<int64_t>(s.size()));
    std::vector<std::vector<int64_t>> out(static_cast<size_t>(c.n_layer));
    size_t at = 0;
    for (int64_t l = 0; l < c.n_layer; ++l)
      if (!c.layer_sliding[static_cast<size_t>(l)])
        for (int64_t h = 0; h < c.n_head_kv; ++h) out[static_cast<size_t>(l)].push_back(flat[at++]);
    return caps_[key] = std::move(out);
  }

 private:
  std::string name_;
  Formula formula_;
  HeadFileOptions o_;
  HeadScoreFile file_;
  std::vector<std::vector<double>> kv_scores_;
  std::map<std::pair<int64_t, int64_t>, std::vector<std::vector<int64_t>>> caps_;
};

}  // namespace

std::unique_ptr<Press> make_head_file_press(const std::string& name, Formula formula, std::unique_ptr<Press> inner,
                                            const HeadFileOptions& options) {
  if (options.head_scores.empty())
    throw Error("press '" + name + "' needs head_scores=FILE (a JSON file of per-head importance scores keyed \"layer-head\")");
  return std::make_unique<HeadFilePress>(name, formula, std::move(inner), options);
}

std::vector<std::vector<int64_t>> head_file_caps(Press& press, const Model& model, int64_t base, int64_t available) {
  auto* p = dynamic_cast<HeadFilePress*>(&press);
  if (!p) throw Error("internal: press '" + press.name() + "' does not allocate from a head-score file");
  return p->caps(model, base, available);
}


void register_head_file_press(const std::string& name, const std::string& doc, const std::string& notes, Formula formula,
                              double beta_default, const std::string& beta_doc, const std::string& temp_doc) {
  using O = HeadFileOptions;
  std::vector<OptionField<O>> fields{
      field("head_scores", &O::head_scores,
            "JSON file of query-head scores keyed \"layer-head\" (a list of per-run scores, averaged, or a number; keys starting with _ "
            "skipped; _meta.model must name the loaded model)"),
      field("metric", &O::metric,
            "read this metric of a kvsqueeze profile's \"_all\" (infscore, retrieval, retrieval_reasoning, ...) instead of the "
            "file's \"layer-head\" lists"),
      field("beta", &O::beta, 1, 1e9, beta_doc),
      field("temp", &O::temp, 0, 1e3, temp_doc),
      field("parity", &O::parity,
            "upstream's raw caps (rounded, not fitted to the total; unusable budget wasted; no compression when B > L - window)")};
  fields[2].decl.default_value = beta_default;  // each formula has its own default beta
  register_wrapper<O>({name, doc, {}, 1, notes}, std::move(fields), [name, formula](const O& o, PressList inner) {
    return make_head_file_press(name, formula, std::move(inner.at(0)), o);
  });
}

}  // namespace kvsqueeze::head_budget
