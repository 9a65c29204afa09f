// Parity of the query-statistics and geometry scorers (expected_attention, cap, cur,
// non_causal_attn, leverage, compactor) with kvpress 0.5.5 fixtures, on stories260K and on the
// default model (its global layers), through the fp32-activation reference path.
#include "kvpress_parity.h"

namespace {

parity::Tolerance gemma_tol() {
  parity::Tolerance t;
  t.score_rtol = 2e-3;
  t.score_atol = 1e-6;
  t.tie_tol = 1e-5;
  t.min_jaccard = 0.99;
  return t;
}

parity::Case with_tol(parity::Case c, const parity::Tolerance& t) {
  c.tol = t;
  return c;
}

}  // namespace

TEST(KvpressParityQStats, ExpectedAttention) { parity::check("stories", {"expected_attention", "expected_attention"}); }
TEST(KvpressParityQStats, ExpectedAttentionEps) {
  parity::check("stories", {"expected_attention_eps1e-2", "expected_attention", {"epsilon=0.01"}});
}
TEST(KvpressParityQStatsDefaultModel, ExpectedAttention) {
  parity::check("gemma", with_tol({"expected_attention", "expected_attention"}, gemma_tol()));
}
TEST(KvpressParityQStatsDefaultModel, ExpectedAttentionEps) {
  parity::check("gemma", with_tol({"expected_attention_eps1e-2", "expected_attention", {"epsilon=0.01"}}, gemma_tol()));
}

TEST(KvpressParityQStats, Cap) { parity::check("stories", {"cap", "cap"}); }
TEST(KvpressParityQStatsDefaultModel, Cap) { parity::check("gemma", with_tol({"cap", "cap"}, gemma_tol())); }
TEST(KvpressParityQStats, Cur) { parity::check("stories", {"cur", "cur"}); }
TEST(KvpressParityQStatsDefaultModel, Cur) { parity::check("gemma", with_tol({"cur", "cur"}, gemma_tol())); }
