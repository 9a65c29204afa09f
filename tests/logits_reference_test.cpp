// Logits against HF transformers on the same GGUF files (fixtures from
// tests/reference/make_logits_fixtures.py): top-1 on every stored position, and the
// stored top-16 and probe logits within a tolerance that depends on the weight type.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "fixture_models.h"
#include "kvsqueeze/session.h"

using namespace kvsqueeze;

namespace {

struct Tolerance {
  float abs;
  float rel;       // of the position's largest |logit|
  float rel_pos0;  // the same at position 0
};

// HF dequantizes weights to fp32 and computes in fp32. Float-weight models differ from us only
// by summation order and the fp16 KV cache (~1e-3 relative on a logit). Quantized-weight models
// additionally see our 8-bit activation quantization in every matmul (as llama.cpp does): about
// 1.5e-2 of the largest logit on the tiny models, up to 3.3e-2 on Gemma 3 270M (18 layers,
// 755-token prompt) and 1.9e-2 on the Qwen2.5-Coder 0.5B/1.5B prompts past position 0, so the
// bound is 5e-2. Real defects (a wrong RoPE base, window or scale) move logits by O(1) relative
// and break top-1 agreement, which is checked on every position.
//
// Position 0 of Qwen2.5-Coder-1.5B is the exception. The first token's residual stream carries a
// "massive activation" (max |h| 3300-4400 on these prompts, against 120-660 at the other
// positions; measured in HF), so after RMSNorm one channel dwarfs the rest of its 32-wide block
// and int8 activation quantization (amax/127 per 32) rounds the others coarsely. Measured there:
// 7.2e-2 (capital), 3.4e-2 (code) and 9.7e-2 (chat) of the largest logit. HF itself, with the
// same int8 quantization of every nn.Linear input (tests/reference/act_quant_check.py), moves
// by 7.3e-2, 3.5e-2 and 9.6e-2 there (and by at most 2.4e-2 elsewhere), and at position 0 of
// "chat" lands within ~0.06 of our logits (~10, both ~1.5 above fp32): the gap is the activation
// quantization, not a defect. That position gets 0.15; the 0.5B model (max |h| 800-2200 at
// position 0) stays within 1.8e-2 there and keeps 5e-2.
Tolerance tolerance_for(const std::string& name) {
  const bool float_weights = name.find("f32") != std::string::npos || name.find("f16") != std::string::npos ||
                             name.find("bf16") != std::string::npos || name.find("stories") != std::string::npos;
  if (float_weights) return {2e-3f, 2e-3f, 2e-3f};
  if (name.find("qwen25_15b") != std::string::npos) return {5e-2f, 5e-2f, 0.15f};
  return {5e-2f, 5e-2f, 5e-2f};
}

struct Comparison {
  float max_err = 0.0f;
  int argmax_mismatch = 0;
  float max_swap_gap = 0.0f;  // largest reference top-1 margin over our choice, among swaps
  int positions = 0;
  int64_t worst_pos = -1;       // where max_err is
  float max_err_after_0 = 0.0f;  // max_err over positions > 0
};

Comparison compare_prompt(Session& session, const nlohmann::json& fixture, const nlohmann::json& prompt, const Tolerance& tol,
                          const std::string& label) {
  const std::vector<int32_t> ids = prompt.at("ids");
  std::vector<float> logits;
  session.eval(ids, &logits);
  const int64_t V = session.model().config().n_vocab;
  const std::vector<int32_t> probes = fixture.at("probe_ids");
  Comparison c;
  for (const auto& p : prompt.at("per_position")) {
    const int64_t pos = p.at("pos");
    const float* row = logits.data() + pos * V;
    const float scale = p.at("max_abs_logit");
    const float allowed = tol.abs + (pos == 0 ? tol.rel_pos0 : tol.rel) * scale;
    const int32_t want_top = p.at("argmax");
    const int32_t got_top = static_cast<int32_t>(std::max_element(row, row + V) - row);
    c.positions++;
    if (got_top != want_top) {
      // Allowed only on a near-tie: our choice must be in the reference's top list with a
      // reference logit within 0.15 (and the tolerance) of the reference's best. Observed swaps
      // have reference margins of at most 0.08.
      c.argmax_mismatch++;
      const std::vector<int32_t> ids = p.at("top_ids");
      const std::vector<float> vals = p.at("top_logits");
      const auto it = std::find(ids.begin(), ids.end(), got_top);
      const bool near_tie =
          it != ids.end() && vals[0] - vals[static_cast<size_t>(it - ids.begin())] <= std::min(allowed, 0.15f);
      if (it != ids.end()) c.max_swap_gap = std::max(c.max_swap_gap, vals[0] - vals[static_cast<size_t>(it - ids.begin())]);
      EXPECT_TRUE(near_tie) << label << " pos " << pos << ": argmax " << got_top << ", reference " << want_top
                            << " (reference gap " << (it == ids.end() ? -1.0f : vals[0] - vals[static_cast<size_t>(it - ids.begin())])
                            << ", allowed " << allowed << ")";
    }
    auto check = [&](int32_t id, float want) {
      const float err = std::fabs(row[id] - want);
      const float rel = err / std::max(1.0f, scale);
      if (rel > c.max_err) {
        c.max_err = rel;
        c.worst_pos = pos;
      }
      if (pos > 0) c.max_err_after_0 = std::max(c.max_err_after_0, rel);
      EXPECT_LE(err, allowed) << label << " pos " << pos << " id " << id << ": " << row[id] << " vs reference " << want;
    };
    const std::vector<int32_t> top_ids = p.at("top_ids");
    const std::vector<float> top_logits = p.at("top_logits");
    for (size_t i = 0; i < top_ids.size(); ++i) check(top_ids[i], top_logits[i]);
    const std::vector<float> probe_logits = p.at("probe_logits");
    for (size_t i = 0; i < probes.size(); ++i) check(probes[i], probe_logits[i]);
  }
  return c;
}

void check_fixture(const std::string& name, KvType kv_type = KvType::F16) {
  const auto fixture = fixture_models::load_json(test_paths::fixtures() + "/logits/" + name + ".json");
  std::string why;
  const std::string path = fixture_models::model_path(fixture, &why);
  if (path.empty()) GTEST_SKIP() << why;
  auto model = Model::load(path);
  const Tolerance tol = tolerance_for(name);
  for (const auto& prompt : fixture.at("prompts")) {
    SessionOptions o;
    o.kv_type_k = o.kv_type_v = kv_type;
    o.chunk = 64;  // exercise chunked prefill on the longer prompts
    o.ctx_size = static_cast<int64_t>(prompt.at("ids").size()) + 1;
    Session session(*model, o);
    const std::string label = name + "/" + prompt.at("name").get<std::string>();
    const Comparison c = compare_prompt(session, fixture, prompt, tol, label);
    std::printf("[ logits   ] %-32s %3d positions, max |diff| / max(1,|logit|max) = %.2e (pos %lld; %.2e after pos 0), "
                "argmax near-tie swaps %d (largest reference margin %.3f)\n",
                label.c_str(), c.positions, c.max_err, static_cast<long long>(c.worst_pos), c.max_err_after_0,
                c.argmax_mismatch, c.max_swap_gap);
  }
}

std::vector<std::string> fixture_names() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(test_paths::fixtures() + "/logits")) {
    const std::string stem = e.path().stem().string();
    if (e.path().extension() == ".json" && stem.find("greedy") == std::string::npos) names.push_back(stem);
  }
  std::sort(names.begin(), names.end());
  return names;
}

class LogitsReference : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(LogitsReference, MatchesTransformers) { check_fixture(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Fixtures, LogitsReference, ::testing::ValuesIn(fixture_names()),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& ch : n)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           // The real cached models are large: tests naming them are run in the
                           // optimised build only (the ASan stage excludes "DefaultModel").
                           if (n.find("gemma3_270m") != std::string::npos || n.find("qwen25_") != std::string::npos)
                             n = "DefaultModel_" + n;
                           return n;
                         });

TEST(LogitsReference, StoriesF32CacheIsTighter) { check_fixture("stories260k", KvType::F32); }

// Greedy continuation from HF generate(do_sample=False), token for token, teacher-forced on the
// reference's tokens so every step is checked. A step may pick another token only on a near-tie:
// our own logit for the reference's token within 0.15 of our best (the near-tie bound of the
// logits comparison above). Such ties are real: the AVX2 and AVX-512 kernel variants fuse
// accumulations differently and flip the Gemma continuation's step 5 between them.
void check_greedy(const std::string& name) {
  const auto fixture = fixture_models::load_json(test_paths::fixtures() + "/logits/" + name + ".json");
  std::string why;
  const std::string path = fixture_models::model_path(fixture, &why);
  if (path.empty()) GTEST_SKIP() << why;
  auto model = Model::load(path);
  Session session(*model, {});
  const std::vector<int32_t> prompt = fixture.at("prompt_ids");
  const std::vector<int32_t> want = fixture.at("generated_ids");
  constexpr float kNearTie = 0.15f;
  int swaps = 0;
  float widest = 0.0f;
  std::vector<float> logits = session.eval(prompt);
  for (size_t i = 0; i < want.size(); ++i) {
    const int32_t id = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (id != want[i]) {
      const float margin = logits[static_cast<size_t>(id)] - logits[static_cast<size_t>(want[i])];
      ++swaps;
      widest = std::max(widest, margin);
      EXPECT_LE(margin, kNearTie) << name << " step " << i << ": we pick " << id << " ("
                                  << model->tokenizer().decode({id}) << "), the reference " << want[i] << " ("
                                  << model->tokenizer().decode({want[i]}) << "), by a margin of " << margin;
    }
    logits = session.eval({want[i]});
  }
  std::printf("[ greedy   ] %-36s %zu steps, near-tie swaps %d (widest margin %.3f)\n", name.c_str(), want.size(), swaps,
              widest);
}

TEST(GreedyReference, Stories260KContinuationTokenForToken) { check_greedy("stories260k_greedy"); }
TEST(GreedyReference, DefaultModelContinuationTokenForToken) { check_greedy("gemma3_270m_q4km_greedy"); }
// The Qwen2.5-Coder instruct models: 32 tokens from the ChatML instruction prompt (HF's rendering of
// the GGUF's chat template, default system prompt included).
TEST(GreedyReference, DefaultModelQwen05bChatTokenForToken) { check_greedy("qwen25_05b_instruct_q4km_greedy"); }
TEST(GreedyReference, DefaultModelQwen15bChatTokenForToken) { check_greedy("qwen25_15b_instruct_q4km_greedy"); }
