// Parity with kvpress 0.5.5 of the presses that decide over every layer or run extra passes
// (KVzip, KVCompose) and of DuoAttention's on-the-fly head scores, plus checks that their
// uneven per-head budgets really shrink the cache (bytes held follow the per-head lengths).
#include <cstdio>
#include <fstream>
#include <numeric>
#include <unistd.h>

#include "kvpress_parity.h"
#include "press/global_presses.h"

namespace {

using parity::json;
using parity::num;
using namespace kvsqueeze;

using Exact = parity::ExactActivations;

const GlobalPressTrace& trace_of(const Press& p) { return dynamic_cast<const TracedPress&>(p).trace(); }

// The fixture's score call of a layer (resolving "same_as_first_run").
const json& ref_scores(const parity::Fixture& f, size_t r, size_t layer) { return parity::score_calls(f, r, layer)[0]["scores"]; }

struct Deviation {
  double max_rel = 0;
  void add(double got, double want) { max_rel = std::max(max_rel, std::fabs(got - want) / std::max(std::fabs(want), 1e-6)); }
};

// Scores of one layer: every slot within atol + rtol * |ref|.
void expect_layer_scores(const json& ref, const LayerScores& ours, double rtol, double atol, const std::string& where, Deviation& dev) {
  ASSERT_EQ(ref.size(), ours.size()) << where;
  for (size_t h = 0; h < ours.size(); ++h) {
    ASSERT_EQ(ref[h].size(), ours[h].size()) << where << " head " << h;
    int bad = 0;
    for (size_t i = 0; i < ours[h].size(); ++i) {
      const double want = num(ref[h][i]), got = ours[h][i];
      dev.add(got, want);
      if (!(std::fabs(got - want) <= atol + rtol * std::fabs(want)) && bad++ < 5)
        ADD_FAILURE() << where << " head " << h << " slot " << i << ": " << got << ", reference " << want;
    }
  }
}

// Kept positions under a shared cut: a disagreement is allowed only where the reference score
// is within tie_tol of the reference's cut (the lowest kept unprotected score of the pool).
struct KeptCheck {
  double min_jaccard = 1.0;
  int disagreements = 0;
};
void expect_kept_pool(const std::vector<std::vector<std::vector<int32_t>>>& ours, const std::vector<const json*>& ref_layers,
                      const std::vector<const json*>& ref_score_layers, const std::vector<int64_t>& layers, int32_t n_protected,
                      double tie_tol, const std::string& where, KeptCheck& kc) {
  double cut = INFINITY;
  for (size_t i = 0; i < layers.size(); ++i) {
    const json& kept = (*ref_layers[i])["kept"];
    for (size_t h = 0; h < kept.size(); ++h)
      for (const auto& p : kept[h])
        if (p.get<int32_t>() >= n_protected) cut = std::min(cut, num((*ref_score_layers[i])[h][p.get<size_t>()]));
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    const json& kept = (*ref_layers[i])["kept"];
    const auto& got_l = ours[static_cast<size_t>(layers[i])];
    for (size_t h = 0; h < got_l.size(); ++h) {
      const auto want_v = kept[h].get<std::vector<int32_t>>();
      const std::set<int32_t> want(want_v.begin(), want_v.end()), got(got_l[h].begin(), got_l[h].end());
      size_t inter = 0;
      for (int32_t p : got) inter += want.count(p);
      const size_t uni = want.size() + got.size() - inter;
      kc.min_jaccard = std::min(kc.min_jaccard, uni ? static_cast<double>(inter) / static_cast<double>(uni) : 1.0);
      auto check = [&](int32_t p, const char* what) {
        ++kc.disagreements;
        const double s = num((*ref_score_layers[i])[h][static_cast<size_t>(p)]);
        EXPECT_LE(std::fabs(s - cut), tie_tol) << where << " layer " << layers[i] << " head " << h << ": " << what << " " << p
                                               << " (reference score " << s << ", cut " << cut << ")";
      };
      for (int32_t p : want)
        if (!got.count(p)) check(p, "reference keeps");
      for (int32_t p : got)
        if (!want.count(p)) check(p, "we keep");
    }
  }
}

// Bytes held after release_slack(0) are exactly the per-head lengths' rows and positions.
void expect_bytes_follow_lengths(const Session& s) {
  const KvCache& c = s.cache();
  size_t want = 0;
  for (const auto& layer : c.lengths())
    for (int64_t len : layer) want += static_cast<size_t>(len) * (c.k_row_bytes() + c.v_row_bytes() + sizeof(int32_t));
  EXPECT_EQ(c.bytes_held(), want);
}

// Runs `expr` with `opts` on the fixture input (fp32 cache) and returns the press and session.
struct Ran {
  std::unique_ptr<Press> press;
  std::unique_ptr<Session> session;
};
Ran run_press(const Model& model, const std::vector<int32_t>& ids, const std::string& expr, const std::vector<std::string>& opts,
              const Budget& budget) {
  SessionOptions o;
  o.kv_type_k = o.kv_type_v = KvType::F32;
  o.threads = 1;
  Ran r;
  r.press = make_press(expr, opts);
  r.session = std::make_unique<Session>(model, o);
  prefill_with_press(*r.session, ids, *r.press, budget, 0);
  return r;
}

std::vector<std::vector<std::vector<int32_t>>> kept_positions(const Session& s) {
  std::vector<std::vector<std::vector<int32_t>>> out;
  for (int64_t l = 0; l < s.cache().shape().n_layer; ++l) {
    out.emplace_back();
    for (int64_t h = 0; h < s.cache().shape().n_head_kv; ++h) {
      const auto p = s.cache().positions(l, h);
      out.back().emplace_back(p.begin(), p.end());
    }
  }
  return out;
}

// ---- KVzip ---------------------------------------------------------------------------------

void check_kvzip(const std::string& fixture, const std::vector<std::string>& opts, bool layerwise) {
  auto f = parity::load("stories", fixture);
  ASSERT_TRUE(f);
  auto model = Model::load(f->model_path);
  Exact exact;
  Deviation dev;
  KeptCheck kc;
  for (size_t r = 0; r < f->j["runs"].size(); ++r) {
    const json& run = f->run(r);
    Budget b;
    b.ratio = run["ratio"].get<double>();
    Ran ran = run_press(*model, f->ids, "kvzip", opts, b);
    const auto& tr = trace_of(*ran.press);
    // The repeat pass is built exactly as kvpress builds it (no chat template: empty prefix, "\n" suffix).
    ASSERT_EQ(tr.repeat_ids.size(), run["repeat_pass_input_ids"].size());
    for (size_t i = 0; i < tr.repeat_ids.size(); ++i) EXPECT_EQ(tr.repeat_ids[i], run["repeat_pass_input_ids"][i].get<std::vector<int32_t>>());
    EXPECT_EQ(tr.prefix_length, run["prefix_length"].get<int64_t>());
    const std::string where = fixture + " ratio " + std::to_string(b.ratio);
    const int64_t n_layer = model->config().n_layer;
    std::vector<const json*> ref_layers, ref_sc;
    std::vector<int64_t> layers;
    for (int64_t l = 0; l < n_layer; ++l) {
      expect_layer_scores(ref_scores(*f, r, static_cast<size_t>(l)), tr.scores[static_cast<size_t>(l)], 2e-4, 1e-7,
                          where + " layer " + std::to_string(l), dev);
      ref_layers.push_back(&run["layers"][static_cast<size_t>(l)]);
      ref_sc.push_back(&ref_scores(*f, r, static_cast<size_t>(l)));
      layers.push_back(l);
    }
    const auto ours = kept_positions(*ran.session);
    if (layerwise) {
      for (size_t i = 0; i < layers.size(); ++i)
        expect_kept_pool(ours, {ref_layers[i]}, {ref_sc[i]}, {layers[i]}, 4, 1e-6, where, kc);
    } else {
      expect_kept_pool(ours, ref_layers, ref_sc, layers, 4, 1e-6, where, kc);
    }
    expect_bytes_follow_lengths(*ran.session);
    EXPECT_EQ(ran.session->next_position(), static_cast<int32_t>(f->ids.size()));  // repeat passes rolled back
  }
  std::printf("[ %s ] max relative score deviation %.3g, min Jaccard %.4f, %d kept-set disagreements (all at the cut)\n",
              fixture.c_str(), dev.max_rel, kc.min_jaccard, kc.disagreements);
}

}  // namespace

TEST(KvpressParityGlobal, Kvzip) { check_kvzip("kvzip", {}, false); }
TEST(KvpressParityGlobal, KvzipLayerwise) { check_kvzip("kvzip_layerwise", {"layerwise=true"}, true); }
TEST(KvpressParityGlobal, KvzipPlus) { check_kvzip("kvzip_plus", {"kvzip_plus_normalization=true"}, false); }

// ---- KVCompose -----------------------------------------------------------------------------

namespace {

// Whether vector `i` holds a value tied (within 1e-6 relative) with the global top-n_kept cut
// over all vectors: only then may its count differ from the reference's (torch orders ties arbitrarily).
bool tied_at_cut(const std::vector<std::vector<float>>& vecs, double ratio, size_t i) {
  std::vector<float> all;
  for (const auto& v : vecs) all.insert(all.end(), v.begin(), v.end());
  const auto n_kept = static_cast<size_t>(std::trunc(static_cast<double>(all.size()) * (1.0 - ratio)));
  if (n_kept == 0 || n_kept > all.size()) return false;
  std::nth_element(all.begin(), all.begin() + static_cast<long>(n_kept - 1), all.end(), std::greater<float>());
  const float cut = all[n_kept - 1];
  for (float x : vecs[i])
    if (std::fabs(x - cut) <= 1e-6 * std::fabs(cut)) return true;
  return false;
}

void check_kvcompose(const std::string& model_name, const std::string& fixture, const std::vector<std::string>& opts, bool structured) {
  auto f = parity::load(model_name, fixture);
  if (!f) {
    if (model_name == "gemma") GTEST_SKIP() << "default model not present (scripts/get_default_model.sh)";
    return;
  }
  auto model = Model::load(f->model_path);
  Exact exact;
  Deviation dev;
  KeptCheck kc;
  const double rtol = model_name == "gemma" ? 2e-3 : 2e-4;
  int64_t count_mismatch = 0;
  for (size_t r = 0; r < f->j["runs"].size(); ++r) {
    const json& run = f->run(r);
    Budget b;
    b.ratio = run["ratio"].get<double>();
    Ran ran = run_press(*model, f->ids, "kvcompose", opts, b);
    const auto& tr = trace_of(*ran.press);
    const std::string where = model_name + "/" + fixture + " ratio " + std::to_string(b.ratio);
    const auto& cfg = model->config();
    const auto ours = kept_positions(*ran.session);
    for (int64_t l = 0; l < cfg.n_layer; ++l) {
      const size_t li = static_cast<size_t>(l);
      const std::string wl = where + " layer " + std::to_string(l);
      expect_layer_scores(ref_scores(*f, r, li), tr.scores[li], rtol, 1e-7, wl, dev);
      const json& comp = run["layers"][li]["composite_layer"];
      ASSERT_EQ(comp.size(), tr.composite[li].size()) << wl;
      for (size_t c = 0; c < comp.size(); ++c) {
        dev.add(tr.composite[li][c], num(comp[c]));
        EXPECT_NEAR(tr.composite[li][c], num(comp[c]), 1e-7 + rtol * std::fabs(num(comp[c]))) << wl << " composite rank " << c;
      }
      // Counts come from a global top-k over composites: equal unless a composite sits at the cut.
      const int64_t want_layer = run["important_per_layer"][li].get<int64_t>();
      if (tr.kept_per_layer[li] != want_layer) {
        ++count_mismatch;
        EXPECT_TRUE(tied_at_cut(tr.composite, b.ratio, li)) << wl << ": keeps " << tr.kept_per_layer[li] << ", reference " << want_layer;
      }
      for (int64_t h = 0; h < cfg.n_head_kv; ++h) {
        const int64_t want_head = run["important_per_head"][li][static_cast<size_t>(h)].get<int64_t>();
        if (tr.kept_per_head[li][static_cast<size_t>(h)] == want_head) continue;
        ++count_mismatch;
        std::vector<std::vector<float>> sorted_heads;
        for (const auto& layer : tr.scores)
          for (auto v : layer) {
            std::sort(v.begin(), v.end(), std::greater<float>());
            sorted_heads.push_back(v);
          }
        EXPECT_TRUE(tied_at_cut(sorted_heads, b.ratio, li * static_cast<size_t>(cfg.n_head_kv) + static_cast<size_t>(h))) << wl << " head " << h;
      }
      if (cfg.layer_sliding[li]) {  // never compressed here
        for (const auto& head : ours[li]) EXPECT_EQ(head.size(), f->ids.size()) << wl;
        continue;
      }
      json ref_layer = run["layers"][li];
      if (!ref_layer.contains("kept")) {  // kvpress left the layer whole
        std::vector<int32_t> all(f->ids.size());
        std::iota(all.begin(), all.end(), 0);
        ref_layer["kept"] = json::array();
        for (int64_t h = 0; h < cfg.n_head_kv; ++h) ref_layer["kept"].push_back(all);
      }
      // Each head keeps its own top count: a per-head cut. Where the count differs (a tie at the
      // global cut), one kept set must contain the other.
      for (int64_t h = 0; h < cfg.n_head_kv; ++h) {
        const auto want_v = ref_layer["kept"][static_cast<size_t>(h)].get<std::vector<int32_t>>();
        const auto& got_v = ours[li][static_cast<size_t>(h)];
        if (want_v.size() != got_v.size()) {
          const auto& small = want_v.size() < got_v.size() ? want_v : got_v;
          const auto& big = want_v.size() < got_v.size() ? got_v : want_v;
          EXPECT_TRUE(std::includes(big.begin(), big.end(), small.begin(), small.end())) << wl << " head " << h;
          continue;
        }
        json one_layer = {{"kept", json::array({ref_layer["kept"][static_cast<size_t>(h)]})}};
        json one_scores = json::array({ref_scores(*f, r, li)[static_cast<size_t>(h)]});
        std::vector<std::vector<std::vector<int32_t>>> mine(cfg.n_layer);
        mine[li] = {ours[li][static_cast<size_t>(h)]};
        expect_kept_pool(mine, {&one_layer}, {&one_scores}, {l}, 0, 1e-6, wl + " head " + std::to_string(h), kc);
      }
      if (!structured) {
        for (int64_t h = 0; h < cfg.n_head_kv; ++h)
          EXPECT_EQ(static_cast<int64_t>(ours[li][static_cast<size_t>(h)].size()), tr.kept_per_head[li][static_cast<size_t>(h)]) << wl;
      }
    }
    expect_bytes_follow_lengths(*ran.session);
    EXPECT_EQ(ran.session->next_position(), static_cast<int32_t>(f->ids.size()));
  }
  std::printf("[ %s/%s ] max relative score deviation %.3g, min Jaccard %.4f, %d kept-set disagreements (all at the cut), "
              "%lld counts off by a tie\n",
              model_name.c_str(), fixture.c_str(), dev.max_rel, kc.min_jaccard, kc.disagreements, static_cast<long long>(count_mismatch));
}

}  // namespace

TEST(KvpressParityGlobal, KvCompose) { check_kvcompose("stories", "kvcompose", {}, true); }
TEST(KvpressParityGlobal, KvComposeUnstructured) { check_kvcompose("stories", "kvcompose_unstructured", {"structured=false"}, false); }
TEST(KvpressParityGlobalDefaultModel, KvCompose) { check_kvcompose("gemma", "kvcompose", {"parity=true"}, true); }
TEST(KvpressParityGlobalDefaultModel, KvComposeUnstructured) {
  check_kvcompose("gemma", "kvcompose_unstructured", {"structured=false", "parity=true"}, false);
}

// ---- DuoAttention --------------------------------------------------------------------------

namespace {

void check_duo(const std::string& fixture, std::vector<std::string> opts) {
  auto f = parity::load("stories", fixture);
  ASSERT_TRUE(f);
  auto model = Model::load(f->model_path);
  Exact exact;
  Deviation dev;
  const auto& cfg = model->config();
  for (size_t r = 0; r < f->j["runs"].size(); ++r) {
    const json& run = f->run(r);
    Budget b;
    b.ratio = run["ratio"].get<double>();  // --ratio is the head compression ratio
    auto o = opts;
    o.push_back("sink_size=" + std::to_string(run["sink_size"].get<int>()));
    o.push_back("recent_size=" + std::to_string(run["recent_size"].get<int>()));
    Ran ran = run_press(*model, f->ids, "duo_attention", o, b);
    const std::string where = fixture + " ratio " + std::to_string(b.ratio);
    const auto& tr = trace_of(*ran.press);
    ASSERT_EQ(tr.scores.size(), static_cast<size_t>(cfg.n_layer));
    for (int64_t l = 0; l < cfg.n_layer; ++l)
      for (int64_t h = 0; h < cfg.n_head_kv; ++h) {
        const double want = num(run["head_scores"][static_cast<size_t>(l)][static_cast<size_t>(h)]);
        const double got = tr.scores[static_cast<size_t>(l)][0][static_cast<size_t>(h)];
        dev.add(got, want);
        EXPECT_NEAR(got, want, 1e-6 + 2e-4 * std::fabs(want)) << where << " layer " << l << " head " << h;
      }
    const auto mask = duo_attention_streaming_mask(*ran.press);
    const auto ours = kept_positions(*ran.session);
    for (int64_t l = 0; l < cfg.n_layer; ++l) {
      const size_t li = static_cast<size_t>(l);
      for (int64_t h = 0; h < cfg.n_head_kv; ++h) {
        const size_t hi = static_cast<size_t>(h);
        EXPECT_EQ(mask[li][hi], run["streaming_mask"][li][hi].get<int>()) << where << " layer " << l << " head " << h;
        EXPECT_EQ(ours[li][hi], run["layers"][li]["kept"][hi].get<std::vector<int32_t>>()) << where << " layer " << l << " head " << h;
      }
    }
    expect_bytes_follow_lengths(*ran.session);
  }
  std::printf("[ %s ] max relative head-score deviation %.3g\n", fixture.c_str(), dev.max_rel);
}

}  // namespace

TEST(KvpressParityGlobal, DuoAttentionOnTheFly) { check_duo("duo_attention_on_the_fly", {}); }
TEST(KvpressParityGlobal, DuoAttentionSink4Recent16) { check_duo("duo_attention_on_the_fly_sink4_recent16", {}); }

// The same texts from a calibration file give the same scores; head_compression_ratio
// overrides --ratio.
TEST(KvpressParityGlobal, DuoAttentionCalibrationFile) {
  auto f = parity::load("stories", "duo_attention_on_the_fly_sink4_recent16");
  ASSERT_TRUE(f);
  auto model = Model::load(f->model_path);
  const std::string path = testing::TempDir() + "kvsq_duo_calibration_" + std::to_string(::getpid()) + ".txt";
  {
    std::ofstream out(path);
    const auto texts = duo_attention_default_texts();
    for (size_t i = 0; i < texts.size(); ++i) out << (i ? "---\n" : "") << texts[i] << "\n";
  }
  Budget b;
  b.ratio = 0.1;
  Ran a = run_press(*model, f->ids, "duo_attention", {"sink_size=4", "recent_size=16", "head_compression_ratio=0.5"}, b);
  Ran c = run_press(*model, f->ids, "duo_attention", {"sink_size=4", "recent_size=16", "head_compression_ratio=0.5", "calibration_file=" + path}, b);
  std::remove(path.c_str());
  EXPECT_EQ(trace_of(*a.press).scores, trace_of(*c.press).scores);
  EXPECT_EQ(duo_attention_streaming_mask(*a.press), duo_attention_streaming_mask(*c.press));
  int streaming = 0;
  for (const auto& l : duo_attention_streaming_mask(*a.press))
    for (char s : l) streaming += s;
  EXPECT_EQ(streaming, 10);  // round(5 layers * 4 heads * 0.5)
  // Streaming heads hold 20 slots, the others all 126: lengths really differ and bytes follow.
  std::set<int64_t> lens;
  for (const auto& l : a.session->cache().lengths()) lens.insert(l.begin(), l.end());
  EXPECT_EQ(lens, (std::set<int64_t>{20, 126}));
  expect_bytes_follow_lengths(*a.session);
}

// KVzip on Gemma 3 (kvpress refuses it, so no reference): the chat-less context is scored on
// the global layers only, which share the whole budget; per-head lengths follow and the
// repeat passes leave nothing behind.
TEST(KvpressParityGlobalDefaultModel, KvzipRunsOnGemma) {
  auto f = parity::load("gemma", "kvcompose");
  if (!f) GTEST_SKIP() << "default model not present (scripts/get_default_model.sh)";
  auto model = Model::load(f->model_path);
  Budget b;
  b.ratio = 0.5;
  Ran ran = run_press(*model, f->ids, "kvzip", {}, b);
  const auto& cfg = model->config();
  const auto& tr = trace_of(*ran.press);
  int64_t kept = 0, total = 0;
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    const size_t li = static_cast<size_t>(l);
    EXPECT_EQ(tr.scores[li].empty(), static_cast<bool>(cfg.layer_sliding[li])) << l;
    if (cfg.layer_sliding[li]) continue;
    for (int64_t h = 0; h < cfg.n_head_kv; ++h) {
      const auto p = ran.session->cache().positions(l, h);
      kept += static_cast<int64_t>(p.size());
      total += static_cast<int64_t>(f->ids.size());
      for (int32_t s = 0; s < 4; ++s) EXPECT_TRUE(std::binary_search(p.begin(), p.end(), s)) << "sink " << s << " layer " << l;
      for (float s : tr.scores[li][static_cast<size_t>(h)]) EXPECT_TRUE(std::isfinite(s) && s >= 0 && s <= 1);
    }
  }
  EXPECT_EQ(kept, total - static_cast<int64_t>(std::trunc(static_cast<double>(total) * 0.5)));
  EXPECT_EQ(ran.session->next_position(), static_cast<int32_t>(f->ids.size()));
  expect_bytes_follow_lengths(*ran.session);
}

// Unstructured KVCompose: heads of a layer really keep different numbers of slots.
TEST(KvpressParityGlobal, KvComposeUnstructuredShrinksPerHead) {
  auto f = parity::load("stories", "kvcompose_unstructured");
  ASSERT_TRUE(f);
  auto model = Model::load(f->model_path);
  Budget b;
  b.ratio = 0.5;
  Ran ran = run_press(*model, f->ids, "kvcompose", {"structured=false"}, b);
  int uneven_layers = 0;
  for (const auto& layer : ran.session->cache().lengths()) uneven_layers += std::set<int64_t>(layer.begin(), layer.end()).size() > 1;
  EXPECT_GE(uneven_layers, 3);
  expect_bytes_follow_lengths(*ran.session);
}
