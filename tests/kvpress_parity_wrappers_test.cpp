// Parity of the wrapper presses (adakv, per_layer, chunk, chunkkv, block, key_rerotation) with
// kvpress 0.5.5 fixtures, on stories260K and on the default model's global layers.
// The fixtures with expected_attention or think inside (adakv_expected_attention*, criticalkv_*,
// criticaladakv_*, chunk_expected_attention_*, composed_snapkv_think) are in
// kvpress_parity_wired_test.cpp.
#include <cfloat>

#include "kernels/ops.h"
#include "kvpress_parity_adakv.h"
#include "model/model_weights.h"
#include "press/wrapper_util.h"

namespace {

using parity::json;
using parity::num;
using namespace kvsqueeze;

parity::Tolerance gemma_tol() { return parity::gemma_tolerance(); }

LayerScores inner_scores(Press& p, const LayerView& v) { return p.inner_presses().at(0)->score(v); }

using Exact = parity::ExactActivations;

// per_layer: the fixture's ratio is null, the layers' ratios are in the run.
void check_per_layer(const std::string& model_name, const parity::Tolerance& tol) {
  auto f = parity::load(model_name, "per_layer_knorm");
  if (!f) {
    if (model_name == "gemma") GTEST_SKIP() << "default model not present";
    return;
  }
  std::string ratios;
  for (const auto& x : f->run(0)["compression_ratios"]) ratios += (ratios.empty() ? "" : ",") + std::to_string(x.get<double>());
  parity::check(model_name, {"per_layer_knorm", "per_layer(knorm)", {"ratios=" + ratios}, "press.press", inner_scores, tol});
}

// chunk (parity::check_chunk): the scores compared over the whole layer.
void check_chunk(const std::string& model_name, const std::string& fixture, int64_t chunk, const parity::Tolerance& tol) {
  parity::check_chunk(model_name, fixture, "chunk(knorm, chunk_length=" + std::to_string(chunk) + ")", chunk, tol, false);
}

// block: kept sets exactly; each of the reference's score calls (the kept slots plus a block, at
// `positions`) is reproduced by the inner press on a gathered view of those slots.
void check_block(const std::string& model_name, const std::string& fixture, int64_t block, const parity::Tolerance& tol) {
  PARITY_OPEN_OR_SKIP(l, model_name, fixture)
  Exact exact;
  int compared = 0;
  for (size_t r = 0; r < l->f.j["runs"].size(); ++r) {
    const double ratio = l->f.run(r)["ratio"].get<double>();
    auto press = make_press("block(keydiff, block_size=" + std::to_string(block) + ")");
    auto check_calls = [&](Press& p, const LayerView& v) {
      const auto li = static_cast<size_t>(v.layer);
      const std::string where = parity::layer_name(model_name, fixture, ratio, v.layer);
      for (const auto& c : parity::score_calls(l->f, r, li)) {
        KeepSets slots;
        for (size_t h = 0; h < c["scores"].size(); ++h) {
          if (c.contains("positions")) slots.push_back(c["positions"][h].get<std::vector<int32_t>>());
          else {
            slots.emplace_back(static_cast<size_t>(c["n"].get<int64_t>()));
            std::iota(slots.back().begin(), slots.back().end(), 0);
          }
        }
        const wrapper::GatheredView g(v, slots);
        parity::expect_scores(c["scores"], p.inner_presses().at(0)->score(g.view()), tol, where);
        ++compared;
      }
      return LayerScores{};
    };
    const auto ours = parity::run_ours(*l->model, l->f.ids, *press, Budget{ratio}, check_calls);
    for (int64_t layer : l->f.compressed_layers(l->model->config())) {
      const auto li = static_cast<size_t>(layer);
      const std::string where = parity::layer_name(model_name, fixture, ratio, layer);
      parity::expect_kept(l->f.run(r)["layers"][li], nullptr, ours.kept[li], {}, ours.positions_before[li], tol, where);
    }
  }
  EXPECT_GT(compared, 0);
}

// chunkkv: whole chunks, the same for every head. Scores against the inner call; kept chunks
// against the reference's, where a swap is allowed only between chunks whose reference chunk
// scores (heads summed, slots averaged) tie at the cut.
void check_chunkkv(const std::string& model_name, const std::string& fixture, const std::string& inner, const parity::Tolerance& tol) {
  PARITY_OPEN_OR_SKIP(l, model_name, fixture)
  Exact exact;
  const int64_t chunk = 20;
  for (size_t r = 0; r < l->f.j["runs"].size(); ++r) {
    const double ratio = l->f.run(r)["ratio"].get<double>();
    auto press = make_press("chunkkv(" + inner + ")");
    const auto ours = parity::run_ours(*l->model, l->f.ids, *press, Budget{ratio}, inner_scores);
    for (int64_t layer : l->f.compressed_layers(l->model->config())) {
      const auto li = static_cast<size_t>(layer);
      const std::string where = parity::layer_name(model_name, fixture, ratio, layer);
      const json* call = parity::score_call(l->f, r, li, "press.press");
      ASSERT_NE(call, nullptr) << where;
      const json& ref = (*call)["scores"];
      parity::expect_scores(ref, ours.scores[li], tol, where);
      const auto len = static_cast<int64_t>(ref[0].size());
      const int64_t n_chunks = (len + chunk - 1) / chunk;
      std::vector<double> cs(static_cast<size_t>(n_chunks), 0.0);
      for (int64_t c = 0; c < n_chunks; ++c) {
        const int64_t b = c * chunk, e = std::min(len, b + chunk);
        for (const auto& head : ref)
          for (int64_t i = b; i < e; ++i) cs[static_cast<size_t>(c)] += num(head[static_cast<size_t>(i)]);
        cs[static_cast<size_t>(c)] /= static_cast<double>(e - b);
      }
      auto chunks_of = [&](const std::vector<int32_t>& kept) {
        std::set<int64_t> out;
        for (int32_t p : kept) out.insert(p / chunk);
        return out;
      };
      const auto want = chunks_of(l->f.run(r)["layers"][li]["kept"][0].get<std::vector<int32_t>>());
      double cut = INFINITY;
      for (int64_t c : want) cut = std::min(cut, cs[static_cast<size_t>(c)]);
      for (size_t h = 0; h < ours.kept[li].size(); ++h) {
        EXPECT_EQ(ours.kept[li][h], ours.kept[li][0]) << where << ": heads keep different slots";
        const auto got = chunks_of(ours.kept[li][h]);
        EXPECT_EQ(got.size(), want.size()) << where << " head " << h;
        for (int64_t c : got)
          if (!want.count(c)) {
            EXPECT_NEAR(cs[static_cast<size_t>(c)], cut, tol.tie_tol * std::max(1.0, std::fabs(cut))) << where << ": we keep chunk " << c;
          }
        for (int64_t c : want)
          if (!got.count(c)) {
            EXPECT_NEAR(cs[static_cast<size_t>(c)], cut, tol.tie_tol * std::max(1.0, std::fabs(cut))) << where << ": reference keeps chunk " << c;
          }
      }
      // Whole chunks: every slot of a kept chunk is kept.
      for (int64_t c : chunks_of(ours.kept[li][0])) {
        int64_t n = 0;
        for (int32_t p : ours.kept[li][0]) n += p / chunk == c;
        EXPECT_EQ(n, std::min(len, (c + 1) * chunk) - c * chunk) << where << " chunk " << c;
      }
    }
  }
}

}  // namespace

// AdaKV (kvpress_parity_adakv.h): when every slot we keep is protected (windows larger than the
// budget), the reference must be a subset of ours.
TEST(KvpressParityWrappers, AdaKvSnapKv) { parity::check_adakv("stories", "adakv_snapkv", "adakv(snapkv)", parity::Tolerance{}, {}); }
TEST(KvpressParityWrappers, PerLayerKnorm) { check_per_layer("stories", parity::Tolerance{}); }
TEST(KvpressParityWrappers, ChunkKnorm) { check_chunk("stories", "chunk_knorm_32", 32, parity::Tolerance{}); }
TEST(KvpressParityWrappers, ChunkKvKnorm) { check_chunkkv("stories", "chunkkv_knorm", "knorm", parity::Tolerance{}); }
TEST(KvpressParityWrappers, ChunkKvSnapKv) { check_chunkkv("stories", "chunkkv_snapkv", "snapkv", parity::Tolerance{}); }
TEST(KvpressParityWrappers, BlockKeyDiff) { check_block("stories", "block_keydiff_32", 32, parity::Tolerance{}); }

TEST(KvpressParityWrappersDefaultModel, AdaKvSnapKv) { parity::check_adakv("gemma", "adakv_snapkv", "adakv(snapkv)", gemma_tol(), {}); }
TEST(KvpressParityWrappersDefaultModel, PerLayerKnorm) { check_per_layer("gemma", gemma_tol()); }
TEST(KvpressParityWrappersDefaultModel, ChunkKnorm) { check_chunk("gemma", "chunk_knorm_64", 64, gemma_tol()); }
TEST(KvpressParityWrappersDefaultModel, ChunkKvKnorm) { check_chunkkv("gemma", "chunkkv_knorm", "knorm", gemma_tol()); }
TEST(KvpressParityWrappersDefaultModel, ChunkKvSnapKv) { check_chunkkv("gemma", "chunkkv_snapkv", "snapkv", gemma_tol()); }
TEST(KvpressParityWrappersDefaultModel, BlockKeyDiff) { check_block("gemma", "block_keydiff_64", 64, gemma_tol()); }

namespace {

// key_rerotation: positions are renumbered, so the kept slots are the inner press's selection on
// the same view (stateless inners); every kept value must be the original's, every kept key the
// original rotated by i - p_i, and the kept slots match the fixture's.
// StreamingLLM's scores are 0/1 upstream (ranks here): its kept sets are compared exactly, without scores.
void check_rerotation(const std::string& fixture, const std::string& inner, bool scores_comparable) {
  auto l = parity::open("stories", fixture);
  if (!l) return;
  Exact exact;
  const auto& c = l->model->config();
  for (size_t r = 0; r < l->f.j["runs"].size(); ++r) {
    const double ratio = l->f.run(r)["ratio"].get<double>();
    auto press = make_press("key_rerotation(" + inner + ")");
    std::vector<std::vector<std::vector<float>>> keys0(static_cast<size_t>(c.n_layer)), values0(static_cast<size_t>(c.n_layer));
    std::vector<KeepSets> selected(static_cast<size_t>(c.n_layer));
    auto snapshot = [&](Press& p, const LayerView& v) {
      selected[static_cast<size_t>(v.layer)] = p.inner_presses().at(0)->select(v, Budget{ratio});
      for (int64_t h = 0; h < v.n_head_kv(); ++h) {
        keys0[static_cast<size_t>(v.layer)].push_back(v.keys(h));
        values0[static_cast<size_t>(v.layer)].push_back(v.values(h));
      }
      return p.inner_presses().at(0)->score(v);
    };
    // run_ours's session is gone when it returns: redo the pipeline here to read the cache.
    SessionOptions o;
    o.kv_type_k = o.kv_type_v = KvType::F32;
    o.threads = 1;
    Session session(*l->model, o);
    session.set_stats_request(press->needs());
    std::vector<LayerScores> scores(static_cast<size_t>(c.n_layer));
    session.set_layer_hook([&](const LayerStats& st, KvCache& cache) {
      const LayerView view(*l->model, st.layer, cache, st);
      press->observe(view);
      scores[static_cast<size_t>(st.layer)] = snapshot(*press, view);
      compress_layer(*press, view, Budget{ratio}, cache);
    });
    session.eval(l->f.ids);
    session.set_layer_hook(nullptr);
    ASSERT_GE(press->next_position(), 1);
    session.set_next_position(static_cast<int32_t>(press->next_position()));
    const int64_t d = c.head_dim_k, dv = c.head_dim_v;
    const auto& inv = l->model->weights().inv_freq_global;
    double max_key_err = 0;
    for (int64_t layer = 0; layer < c.n_layer; ++layer) {
      const auto li = static_cast<size_t>(layer);
      const std::string where = parity::layer_name("stories", fixture, ratio, layer);
      std::vector<std::vector<int32_t>> kept, before;
      for (int64_t h = 0; h < c.n_head_kv; ++h) {
        const auto run = session.cache().run(layer, h);
        const auto& v0 = values0[li][static_cast<size_t>(h)];
        const auto& k0 = keys0[li][static_cast<size_t>(h)];
        kept.emplace_back();
        before.emplace_back();
        for (int32_t i = 0; i < static_cast<int32_t>(v0.size() / static_cast<size_t>(dv)); ++i) before.back().push_back(i);
        const float* k = static_cast<const float*>(run.k);
        const float* v = static_cast<const float*>(run.v);
        // The error of kept slot i against original slot j rotated by i - j (in double).
        auto key_error = [&](int64_t i, int64_t j) {
          double err = 0;
          for (int64_t f = 0; f < d / 2; ++f) {
            const double a = static_cast<double>(i - j) * inv[static_cast<size_t>(f)];
            const int64_t x = c.rope_neox ? f : 2 * f, y = c.rope_neox ? f + d / 2 : 2 * f + 1;
            const double k0x = k0[static_cast<size_t>(j * d + x)], k0y = k0[static_cast<size_t>(j * d + y)];
            const double want_x = k0x * std::cos(a) - k0y * std::sin(a), want_y = k0x * std::sin(a) + k0y * std::cos(a);
            err = std::max({err, std::fabs(k[i * d + x] - want_x), std::fabs(k[i * d + y] - want_y)});
          }
          return err;
        };
        const auto& sel = selected[li].at(static_cast<size_t>(h));
        ASSERT_EQ(static_cast<int64_t>(sel.size()), run.len) << where;
        for (int64_t i = 0; i < run.len; ++i) {
          ASSERT_EQ(run.pos[i], i) << where;
          const int32_t orig = sel[static_cast<size_t>(i)];
          ASSERT_TRUE(std::equal(v + i * dv, v + (i + 1) * dv, v0.begin() + static_cast<std::ptrdiff_t>(orig) * dv)) << where << " slot " << i;
          kept.back().push_back(orig);
          max_key_err = std::max(max_key_err, key_error(i, orig));
        }
      }
      const json* call = parity::score_call(l->f, r, li, "press.press");
      ASSERT_NE(call, nullptr);
      if (scores_comparable) parity::expect_scores((*call)["scores"], scores[li], parity::Tolerance{}, where);
      parity::expect_kept(l->f.run(r)["layers"][li], scores_comparable ? &(*call)["scores"] : nullptr, kept,
                          scores_comparable ? scores[li] : LayerScores{}, before, parity::Tolerance{}, where);
    }
    EXPECT_LT(max_key_err, 1e-5) << "re-rotated keys";
    // The next token continues at n and sees the re-rotated cache like a cache built by hand.
    const int32_t n = session.next_position();
    const std::vector<float> logits = session.eval({l->f.ids.back()});
    Session manual(*l->model, o);
    KvCache cache(session.cache().shape(), 0);
    for (int64_t layer = 0; layer < c.n_layer; ++layer)
      for (int64_t h = 0; h < c.n_head_kv; ++h) {
        KvRun run = session.cache().run(layer, h);
        run.len = n;
        cache.assign(layer, h, run);
      }
    manual.restore(std::move(cache), n, {});
    const std::vector<float> want = manual.eval({l->f.ids.back()});
    ASSERT_EQ(logits.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(logits[i], want[i], 1e-4) << "logit " << i;
  }
}

}  // namespace

TEST(KvpressParityWrappers, KeyRerotationStreamingLlm) { check_rerotation("key_rerotation_streaming_llm", "streaming_llm", false); }
TEST(KvpressParityWrappers, KeyRerotationSnapKv) { check_rerotation("key_rerotation_snapkv", "snapkv", true); }
// Gemma has sliding-window layers, which keep their original positions: re-rotation is refused.
TEST(KvpressParityWrappersDefaultModel, KeyRerotationRefused) {
  const std::string path = test_paths::gemma_model();
  if (path.empty()) GTEST_SKIP() << "default model not present";
  auto model = Model::load(path);
  Session s(*model, SessionOptions{});
  auto press = make_press("key_rerotation(snapkv)");
  std::vector<int32_t> ids(80, 300);
  ids[0] = 2;
  try {
    prefill_with_press(s, ids, *press, Budget{0.5}, 0);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sliding-window"), std::string::npos) << e.what();
  }
}
