// Parity of the first scorers with kvpress 0.5.5 fixtures, on stories260K and on the default
// model (its global layers), both through the fp32-activation reference path.
#include "kvpress_parity.h"

namespace {

parity::Tolerance gemma_tol() { return parity::gemma_tolerance(); }

}  // namespace

TEST(KvpressParity, Knorm) { parity::check("stories", {"knorm", "knorm"}); }
TEST(KvpressParity, KeyDiff) { parity::check("stories", {"keydiff", "keydiff"}); }
TEST(KvpressParity, SnapKv) { parity::check("stories", {"snapkv", "snapkv"}); }
TEST(KvpressParity, SnapKvEager) { parity::check("stories", {"snapkv_eager", "snapkv"}); }
TEST(KvpressParity, Tova) { parity::check("stories", {"tova", "tova"}); }
TEST(KvpressParity, ObservedAttention) { parity::check("stories", {"observed_attention", "observed_attention"}); }
// StreamingLLM scores are 0/1 upstream (rank by position here): compare kept sets only.
TEST(KvpressParity, StreamingLlm) { parity::check("stories", {"streaming_llm", "streaming_llm", {}, ""}); }

TEST(KvpressParityDefaultModel, Knorm) { parity::check("gemma", {"knorm", "knorm", {}, "press", parity::root_scores, gemma_tol()}); }
TEST(KvpressParityDefaultModel, KeyDiff) { parity::check("gemma", {"keydiff", "keydiff", {}, "press", parity::root_scores, gemma_tol()}); }
TEST(KvpressParityDefaultModel, SnapKv) { parity::check("gemma", {"snapkv", "snapkv", {}, "press", parity::root_scores, gemma_tol()}); }
TEST(KvpressParityDefaultModel, Tova) { parity::check("gemma", {"tova", "tova", {}, "press", parity::root_scores, gemma_tol()}); }
TEST(KvpressParityDefaultModel, ObservedAttention) {
  parity::check("gemma", {"observed_attention", "observed_attention", {}, "press", parity::root_scores, gemma_tol()});
}
TEST(KvpressParityDefaultModel, StreamingLlm) { parity::check("gemma", {"streaming_llm", "streaming_llm", {}, ""}); }
