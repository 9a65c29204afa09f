// Parity of ThinK (key-channel pruning) and Finch (question-aware compression) with kvpress
// 0.5.5 fixtures, on stories260K and on the default model (its global layers), through the
// fp32-activation reference path.
//
// ThinK: per layer and KV head, the channel scores (mean window q^2 x mean k^2) and the set of
// pruned channels. The fixtures number channels as HF does; GGUF permutes llama's Q/K rows so
// that interleaved RoPE equals HF's rotate_half, so our channel 2j+s is HF channel s*d/2 + j
// (NeoX-style models such as Gemma keep HF's order).
//
// Finch: the fixture's input is the context ids followed by input.question_ids (kvpress puts a
// delimiter between them and removes it before the model sees it); window_size is the question
// length. Scores and kept positions are compared as for the other scorers. kvpress re-rotates
// the kept keys by default, which changes no kept set: both fixtures are run here with
// rerotate_keys=false (the re-rotated run, on stories, is in kvpress_parity_wired_test.cpp).
#include <map>

#include "kvpress_parity.h"

namespace kvsqueeze {
std::vector<std::vector<float>> think_channel_scores(Press& press, const LayerView& view);
}

namespace {

using parity::json;
using namespace kvsqueeze;

using Exact = parity::ExactActivations;

int64_t hf_channel(const ModelConfig& c, int64_t ch) {
  if (c.rope_neox) return ch;
  return (ch % 2) * (c.head_dim_k / 2) + ch / 2;
}

void check_think(const std::string& model_name, double rtol) {
  auto f = parity::load(model_name, "think");
  if (!f) {
    if (model_name == "gemma") GTEST_SKIP() << "default model not present (scripts/get_default_model.sh)";
    return;
  }
  auto model = Model::load(f->model_path);
  const ModelConfig& c = model->config();
  const int64_t d = c.head_dim_k;
  Exact exact;
  double max_dev = 0;
  for (size_t r = 0; r < f->j["runs"].size(); ++r) {
    const json& run = f->run(r);
    const double ratio = run["press"]["key_channel_compression_ratio"].get<double>();
    auto press = make_press("think", {"key_channel_compression_ratio=" + std::to_string(ratio)});
    SessionOptions o;
    o.kv_type_k = o.kv_type_v = KvType::F32;
    o.threads = 1;
    Session session(*model, o);
    std::map<int64_t, std::vector<std::vector<float>>> scores;
    std::map<int64_t, std::vector<std::vector<int32_t>>> kept;
    session.set_stats_request(press->needs());
    session.set_layer_hook([&](const LayerStats& st, KvCache& cache) {
      const LayerView view(*model, st.layer, cache, st);
      press->observe(view);
      if (!st.last_chunk || cache.window(st.layer) > 0) return;
      scores[st.layer] = think_channel_scores(*press, view);
      const size_t before = cache.bytes_held();
      const auto lengths = cache.lengths();
      Budget b;
      b.ratio = 0.5;  // ThinK ignores the token budget
      compress_layer(*press, view, b, cache);
      EXPECT_EQ(cache.lengths(), lengths) << "think evicted tokens";
      // The K memory shrank by exactly the pruned channels of every slot of capacity.
      size_t freed = 0;
      for (int64_t h = 0; h < c.n_head_kv; ++h) {
        const auto ch = cache.key_channels(st.layer, h);
        kept[st.layer].emplace_back(ch.begin(), ch.end());
        EXPECT_EQ(static_cast<int64_t>(ch.size()), d - static_cast<int64_t>(std::trunc(static_cast<double>(d) * ratio)));
        freed += static_cast<size_t>(cache.capacity(st.layer, h)) * (static_cast<size_t>(d) - ch.size()) * sizeof(float);
        EXPECT_EQ(cache.k_row_bytes(st.layer, h), ch.size() * sizeof(float));
      }
      EXPECT_EQ(before - cache.bytes_held(), freed) << "layer " << st.layer;
    });
    session.eval(f->ids);
    session.set_layer_hook(nullptr);
    for (int64_t l : f->compressed_layers(c)) {
      const std::string where = model_name + " think ratio " + std::to_string(ratio) + " layer " + std::to_string(l);
      const json& ref_layer = run["layers"][static_cast<size_t>(l)];
      ASSERT_TRUE(scores.count(l)) << where;
      for (int64_t h = 0; h < c.n_head_kv; ++h) {
        const json& ref = ref_layer["channel_scores"][static_cast<size_t>(h)];
        ASSERT_EQ(static_cast<int64_t>(ref.size()), d) << where;
        const auto& ours = scores[l][static_cast<size_t>(h)];
        for (int64_t ch = 0; ch < d; ++ch) {
          const double want = parity::num(ref[static_cast<size_t>(hf_channel(c, ch))]), got = ours[static_cast<size_t>(ch)];
          max_dev = std::max(max_dev, std::fabs(got - want) / std::max(std::fabs(want), 1e-12));
          EXPECT_NEAR(got, want, 1e-7 + rtol * std::fabs(want)) << where << " head " << h << " channel " << ch;
        }
        // Pruned sets: equal, except for channels whose reference score ties the cut.
        std::set<int64_t> ours_pruned, ref_pruned;
        const auto& k = kept[l][static_cast<size_t>(h)];
        for (int64_t ch = 0; ch < d; ++ch)
          if (!std::binary_search(k.begin(), k.end(), static_cast<int32_t>(ch))) ours_pruned.insert(hf_channel(c, ch));
        double cut = -INFINITY;
        for (const auto& p : ref_layer["pruned_channels"][static_cast<size_t>(h)]) {
          ref_pruned.insert(p.get<int64_t>());
          cut = std::max(cut, parity::num(ref[p.get<size_t>()]));
        }
        EXPECT_EQ(ours_pruned.size(), ref_pruned.size()) << where << " head " << h;
        for (int64_t ch = 0; ch < d; ++ch) {
          if (ours_pruned.count(ch) == ref_pruned.count(ch)) continue;
          EXPECT_LE(std::fabs(parity::num(ref[static_cast<size_t>(ch)]) - cut), 2 * rtol * cut)
              << where << " head " << h << ": HF channel " << ch << (ref_pruned.count(ch) ? " pruned by kvpress only" : " pruned here only");
        }
      }
    }
  }
  std::printf("[ think    ] %s max relative channel-score deviation %.3g\n", model_name.c_str(), max_dev);
}

void check_finch(const std::string& model_name, const std::string& fixture, const parity::Tolerance& tol) {
  auto f = parity::load(model_name, fixture);
  if (!f) {
    if (model_name == "gemma") GTEST_SKIP() << "default model not present (scripts/get_default_model.sh)";
    return;
  }
  ASSERT_FALSE(f->j.contains("skipped")) << f->j["skipped"];
  std::vector<int32_t> ids = f->ids;
  const auto question = f->j["input"]["question_ids"].get<std::vector<int32_t>>();
  ids.insert(ids.end(), question.begin(), question.end());
  auto model = Model::load(f->model_path);
  Exact exact;
  double max_dev = 0;
  for (size_t r = 0; r < f->j["runs"].size(); ++r) {
    const json& run = f->run(r);
    const int64_t w = run["window_size"].get<int64_t>();
    ASSERT_EQ(w, static_cast<int64_t>(question.size()));
    ASSERT_EQ(run["input_ids_with_delimiter"].size(), ids.size() + 1);
    const bool normalize = run["press"]["normalize_scores"].get<bool>();
    auto press = make_press("finch", {"window_size=" + std::to_string(w), "rerotate_keys=false",
                                      std::string("normalize_scores=") + (normalize ? "true" : "false")});
    Budget b;
    b.ratio = run["ratio"].get<double>();
    const parity::OurRun ours = parity::run_ours(*model, ids, *press, b);
    for (int64_t l : f->compressed_layers(model->config())) {
      const size_t li = static_cast<size_t>(l);
      const std::string where = parity::layer_name(model_name, fixture, b.ratio, l);
      const json* call = parity::score_call(*f, r, li, "press");
      ASSERT_NE(call, nullptr) << where;
      parity::expect_scores((*call)["scores"], ours.scores[li], tol, where);
      for (size_t h = 0; h < ours.scores[li].size(); ++h)
        for (size_t i = 0; i < ours.scores[li][h].size(); ++i)
          if (std::isfinite(ours.scores[li][h][i])) {
            const double want = parity::num((*call)["scores"][h][i]);
            max_dev = std::max(max_dev, std::fabs(ours.scores[li][h][i] - want) / std::max(std::fabs(want), 1e-12));
          }
      parity::expect_kept(run["layers"][li], &(*call)["scores"], ours.kept[li], ours.scores[li], ours.positions_before[li], tol, where);
    }
  }
  std::printf("[ finch    ] %s/%s max relative score deviation %.3g\n", model_name.c_str(), fixture.c_str(), max_dev);
}

parity::Tolerance gemma_tol() { return parity::gemma_tolerance(); }

}  // namespace

TEST(KvpressParityThinkFinch, ThinkChannelScoresAndPrunedChannels) { check_think("stories", 1e-4); }
TEST(KvpressParityThinkFinch, Finch) { check_finch("stories", "finch", {}); }
TEST(KvpressParityThinkFinch, FinchNoRerotateNoNorm) { check_finch("stories", "finch_no_rerotate_no_norm", {}); }

TEST(KvpressParityThinkFinchDefaultModel, ThinkChannelScoresAndPrunedChannels) { check_think("gemma", 2e-3); }
TEST(KvpressParityThinkFinchDefaultModel, Finch) { check_finch("gemma", "finch", gemma_tol()); }
TEST(KvpressParityThinkFinchDefaultModel, FinchNoRerotateNoNorm) { check_finch("gemma", "finch_no_rerotate_no_norm", gemma_tol()); }
