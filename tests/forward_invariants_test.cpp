// Properties of the forward pass that need no reference: chunking, cache types and rollback
// must not change what the model computes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "kvsqueeze/error.h"
#include "kvsqueeze/session.h"
#include "test_paths.h"

using namespace kvsqueeze;

namespace {

const std::vector<int32_t> kPrompt = {1, 403, 407, 261, 378, 300, 290, 411, 322, 265, 282, 295, 433, 426, 385,
                                      328, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396};

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

std::vector<float> all_logits(const Model& model, SessionOptions o, const std::vector<int32_t>& ids) {
  Session s(model, o);
  std::vector<float> out;
  s.eval(ids, &out);
  return out;
}

}  // namespace

TEST(ForwardInvariants, ChunkedPrefillEqualsOnePass) {
  auto model = Model::load(test_paths::stories260k());
  // An fp32 cache: with fp16, a 1e-7 difference upstream can flip one rounding of a cached
  // value (1e-3 relative), which would hide what this test is about.
  SessionOptions whole;
  whole.kv_type_k = whole.kv_type_v = KvType::F32;
  whole.chunk = 512;
  SessionOptions chunked = whole;
  chunked.chunk = 7;
  const auto a = all_logits(*model, whole, kPrompt), b = all_logits(*model, chunked, kPrompt);
  ASSERT_EQ(a.size(), b.size());
  // Same arithmetic up to summation order: chunk sizes pick different matmul and attention
  // paths (GEMM tiles vs row dots).
  EXPECT_LT(max_abs_diff(a, b), 2e-4f);
}

TEST(ForwardInvariants, TokenByTokenEqualsPrefill) {
  auto model = Model::load(test_paths::stories260k());
  SessionOptions o;
  o.kv_type_k = o.kv_type_v = KvType::F32;  // see ChunkedPrefillEqualsOnePass
  Session s(*model, o);
  std::vector<float> prefill;
  s.eval(kPrompt, &prefill);
  Session step(*model, o);
  const int64_t V = model->config().n_vocab;
  for (size_t t = 0; t < kPrompt.size(); ++t) {
    const auto& logits = step.eval({kPrompt[t]});
    std::vector<float> row(prefill.begin() + static_cast<std::ptrdiff_t>(t * V),
                           prefill.begin() + static_cast<std::ptrdiff_t>((t + 1) * V));
    EXPECT_LT(max_abs_diff(logits, row), 2e-4f) << "position " << t;  // as above: summation order only
  }
}

TEST(ForwardInvariants, KvTypesAgree) {
  auto model = Model::load(test_paths::stories260k());
  SessionOptions f32, f16, bf16;
  f32.kv_type_k = f32.kv_type_v = KvType::F32;
  f16.kv_type_k = f16.kv_type_v = KvType::F16;
  bf16.kv_type_k = bf16.kv_type_v = KvType::BF16;
  const auto a = all_logits(*model, f32, kPrompt);
  EXPECT_LT(max_abs_diff(a, all_logits(*model, f16, kPrompt)), 2e-2f);
  EXPECT_LT(max_abs_diff(a, all_logits(*model, bf16, kPrompt)), 1.5e-1f);
}

TEST(ForwardInvariants, RollbackRestoresTheExactState) {
  auto model = Model::load(test_paths::stories260k());
  Session s(*model, {});
  s.eval({kPrompt.begin(), kPrompt.begin() + 20});
  const int32_t mark = s.next_position();
  const size_t held = s.cache().bytes_used();
  const std::vector<float> first = s.eval({kPrompt.begin() + 20, kPrompt.end()});
  s.rollback_to(mark);
  EXPECT_EQ(s.cache().bytes_used(), held);
  EXPECT_EQ(s.cache().length(0, 0), 20);
  const std::vector<float> again = s.eval({kPrompt.begin() + 20, kPrompt.end()});
  EXPECT_EQ(first, again);
}

TEST(ForwardInvariants, ContextLimitAndBadIdsAreErrors) {
  auto model = Model::load(test_paths::stories260k());
  SessionOptions o;
  o.ctx_size = 8;
  Session s(*model, o);
  EXPECT_THROW(s.eval(kPrompt), Error);
  EXPECT_THROW(s.eval({1, 99999}), Error);
  EXPECT_THROW(s.eval({}), Error);
  s.eval({1, 2, 3});
  EXPECT_EQ(s.next_position(), 3);
}

TEST(ForwardInvariants, KvAccountingMatchesLengths) {
  auto model = Model::load(test_paths::stories260k());
  Session s(*model, {});
  s.eval(kPrompt);
  const auto& c = model->config();
  const size_t row = static_cast<size_t>(c.head_dim_k + c.head_dim_v) * 2 + 4;  // f16 K+V row + position
  EXPECT_EQ(s.cache().bytes_used(), kPrompt.size() * static_cast<size_t>(c.n_layer * c.n_head_kv) * row);
  EXPECT_GE(s.cache().bytes_held(), s.cache().bytes_used());
  EXPECT_EQ(s.kv_bytes_full(), kPrompt.size() * static_cast<size_t>(c.kv_bytes_per_token_f16()));
  for (const auto& layer : s.cache().lengths())
    for (int64_t len : layer) EXPECT_EQ(len, static_cast<int64_t>(kPrompt.size()));
}
