#pragma once
// Parity of AdaKV-style presses with kvpress, which runs them in "masked" mode: the fixture's
// kept sets are the complement of the masked slots, and its score call "press.press" holds the
// inner press's scores. kvpress safeguards the top floor(n_kept * alpha) slots of each head
// (score set to FLT_MAX), then keeps the layer's n_kept * heads best: a disagreement of the kept
// sets is allowed only at that layer-wide cut of the safeguarded reference scores.
#include <cfloat>
#include <numeric>

#include "kvpress_parity.h"

namespace parity {

// The reference's inner scores of a masked-mode layer, compared with ours; null (after a
// failure) when the layer is not masked or has no such call.
inline const json* masked_inner_scores(const Fixture& f, size_t r, size_t li, const LayerScores& ours, const Tolerance& tol,
                                       const std::string& where) {
  const json& mode = f.run(r)["layers"][li]["mode"];
  if (mode != "masked") {
    ADD_FAILURE() << where << ": mode " << mode << ", not masked";
    return nullptr;
  }
  const json* call = score_call(f, r, li, "press.press");
  if (!call) {
    ADD_FAILURE() << where << ": no score call 'press.press'";
    return nullptr;
  }
  expect_scores((*call)["scores"], ours, tol, where);
  return &(*call)["scores"];
}

// kvpress's AdaKV selection re-enacted on reference scores `ref` [head][slot].
struct AdaKvReference {
  std::vector<std::vector<double>> safeguarded;  // [head][slot]: each head's top n_safe at FLT_MAX
  std::vector<double> safeguard_edge;            // [head]: raw score of its last safeguarded slot (+inf: none)
  double cut = INFINITY;                         // lowest safeguarded score among the reference's kept slots
};
inline AdaKvReference adakv_reference(const json& ref, const json& ref_kept, double ratio, double alpha) {
  AdaKvReference a;
  a.safeguarded.resize(ref.size());
  a.safeguard_edge.assign(ref.size(), INFINITY);
  for (size_t h = 0; h < ref.size(); ++h) {
    auto& mod = a.safeguarded[h];
    for (const auto& x : ref[h]) mod.push_back(num(x));
    const auto len = static_cast<int64_t>(mod.size());
    const auto n_safe = static_cast<int64_t>(static_cast<double>(static_cast<int64_t>(static_cast<double>(len) * (1 - ratio))) * alpha);
    std::vector<size_t> order(mod.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return mod[x] > mod[y]; });
    if (n_safe > 0) a.safeguard_edge[h] = mod[order[static_cast<size_t>(n_safe - 1)]];
    for (int64_t i = 0; i < n_safe; ++i) mod[order[static_cast<size_t>(i)]] = FLT_MAX;
    for (int32_t p : ref_kept[h].get<std::vector<int32_t>>()) a.cut = std::min(a.cut, mod[static_cast<size_t>(p)]);
  }
  return a;
}

// What besides the layer cut a check allows.
struct AdaKvRules {
  // Also a tie at a head's safeguard edge: which slots kvpress safeguarded among equal scores is
  // arbitrary (ExpectedAttention underflows to exact zeros on stories layer 1).
  bool safeguard_ties = false;
  // Our kept slots at a tie left out of the Jaccard index, as the reference's are (there are
  // many such ties where scores underflow to zero).
  bool our_ties_unjudged = false;
  // When every slot we keep of a head is protected (+inf: windows, sinks larger than its budget)
  // we keep them all (docs/METHODS.md §0): the reference must be a subset of ours, and the layer
  // may keep more slots in all than the reference.
  bool protected_overflow = true;
};

// Kept sets of layer `li` against the reference layer's; returns the heads' lowest raw Jaccard
// index (for the report).
inline double expect_adakv_kept(const json& ref_layer, const json& ref, double ratio, double alpha, const OurRun& ours, size_t li,
                                const Tolerance& tol, const AdaKvRules& rules, const std::string& where) {
  const AdaKvReference a = adakv_reference(ref, ref_layer["kept"], ratio, alpha);
  double min_j = 1;
  size_t want_total = 0, got_total = 0;
  for (size_t h = 0; h < ref.size(); ++h) {
    const auto want_v = ref_layer["kept"][h].get<std::vector<int32_t>>();
    const auto& got_v = ours.kept[li][h];
    const std::set<int32_t> want(want_v.begin(), want_v.end()), got(got_v.begin(), got_v.end());
    min_j = std::min(min_j, raw_jaccard(want_v, got_v));
    want_total += want.size();
    got_total += got.size();
    if (rules.protected_overflow) {
      bool all_protected = got.size() > want.size();
      for (size_t i = 0; i < ours.positions_before[li][h].size() && all_protected; ++i)
        if (got.count(ours.positions_before[li][h][i]) && !std::isinf(ours.scores[li][h][i])) all_protected = false;
      if (all_protected) {
        for (int32_t p : want) EXPECT_TRUE(got.count(p)) << where << " head " << h << ": reference keeps " << p;
        continue;
      }
    }
    const auto& mod = a.safeguarded[h];
    auto at_cut = [&](int32_t p) {
      const auto i = static_cast<size_t>(p);
      return std::fabs(mod[i] - a.cut) <= tol.tie_tol ||
             (rules.safeguard_ties && std::fabs(num(ref[h][i]) - a.safeguard_edge[h]) <= tol.tie_tol);
    };
    size_t inter = 0, uni = 0;
    for (int32_t p : got) {
      if (want.count(p)) {
        ++inter, ++uni;
        continue;
      }
      EXPECT_TRUE(at_cut(p)) << where << " head " << h << ": we keep " << p << " (" << mod[static_cast<size_t>(p)] << ", cut " << a.cut << ")";
      if (!rules.our_ties_unjudged || !at_cut(p)) ++uni;
    }
    for (int32_t p : want)
      if (!got.count(p)) {
        EXPECT_TRUE(at_cut(p)) << where << " head " << h << ": reference keeps " << p << " (" << mod[static_cast<size_t>(p)] << ", cut " << a.cut << ")";
        if (!at_cut(p)) ++uni;
      }
    EXPECT_GE(uni ? static_cast<double>(inter) / static_cast<double>(uni) : 1.0, tol.min_jaccard) << where << " head " << h;
  }
  if (!rules.protected_overflow || got_total <= want_total) {
    EXPECT_EQ(got_total, want_total) << where;
  }
  return min_j;
}

// adakv(inner) as `expression` against every run of the fixture: the inner scores and the kept sets.
inline void check_adakv(const std::string& model_name, const std::string& fixture, const std::string& expression, const Tolerance& tol,
                        const AdaKvRules& rules, Report* report = nullptr) {
  PARITY_OPEN_OR_SKIP(l, model_name, fixture)
  ExactActivations exact;
  Report rep;
  for (size_t r = 0; r < l->f.j["runs"].size(); ++r) {
    const json& run = l->f.run(r);
    const double ratio = run["ratio"].get<double>();
    const double alpha = run["press"]["alpha_safeguard"].get<double>();
    auto press = make_press(expression);
    const auto ours = run_ours(*l->model, l->f.ids, *press, Budget{ratio},
                               [](Press& p, const LayerView& v) { return p.inner_presses().at(0)->score(v); });
    for (int64_t layer : l->f.compressed_layers(l->model->config())) {
      const auto li = static_cast<size_t>(layer);
      const std::string where = layer_name(model_name, fixture, ratio, layer);
      const json* ref = masked_inner_scores(l->f, r, li, ours.scores[li], tol, where);
      ASSERT_NE(ref, nullptr) << where;
      rep.max_rel_dev = std::max(rep.max_rel_dev, max_rel_dev(*ref, ours.scores[li]));
      rep.min_jaccard = std::min(rep.min_jaccard, expect_adakv_kept(run["layers"][li], *ref, ratio, alpha, ours, li, tol, rules, where));
    }
  }
  rep.done = true;
  if (report) *report = rep;
}

}  // namespace parity
