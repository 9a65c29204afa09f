// The ragged KV cache (per layer and KV head runs, compacted to arbitrary keep-sets) with the
// engine's attention computes exactly what a dense cache with the evicted keys masked out
// gives: every check compares Session logits with tests/reference_forward.h, a naive
// double-precision forward pass over a dense cache and a visibility mask.
//
// Tolerances are relative to the row's largest |reference logit|:
//  - F32 cache vs the double reference: kF32Tol = 1e-4. The engine computes in fp32 (unit
//    roundoff 6e-8) with reductions of a few hundred terms over at most 6 layers; observed
//    errors are <= 3e-6, so 1e-4 leaves ample margin, while the evictions themselves move
//    the logits by 0.19 (stories260K) to 1.5 (qwen2) relative, which the test asserts.
//  - F16 cache vs the reference whose keys and values are rounded to fp16 the same way:
//    kF16Tol = 1e-3. Both round to the same grid, but the engine rounds its fp32 values and
//    the reference its double values, so an element within ~1e-7 of a rounding midpoint can
//    land one fp16 ulp (2^-11 relative) apart, and downstream of such a flip the two also
//    round differently. Observed: 2e-5..2e-4 on the synthetic models, 4.5e-4 on stories260K
//    (head_dim 8 amplifies a flip). That is the intrinsic sensitivity, not an engine error:
//    nudging the reference's own values by up to 1.2e-7 relative before rounding moved its
//    logits by up to 5.2e-4 (stories260K, 144 draws) and 3.1e-4 (qwen2).
//  - F16 cache vs the unrounded reference (the error of fp16 storage itself) is only logged,
//    and bounded by kF16VsExactTol = 3e-2, like ForwardInvariants.KvTypesAgree.
// Top-1 must agree, except on a near-tie: when the reference's own top two are within the
// tolerance no implementation within tolerance can be required to pick the same one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "fixture_models.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/session.h"
#include "reference_forward.h"
#include "test_paths.h"

using namespace kvsqueeze;

namespace {

constexpr double kF32Tol = 1e-4;
constexpr double kF16Tol = 1e-3;
constexpr double kF16VsExactTol = 3e-2;

// ---- Models, loaded once per process ----------------------------------------------------

struct Loaded {
  std::unique_ptr<Model> model;
  std::unique_ptr<reference::ReferenceModel> ref;
};

// "stories260k" (shared real model, GQA 8/4) or the name of a synthetic logits fixture.
const Loaded* load(const std::string& name, std::string* why) {
  static std::map<std::string, Loaded> cache;
  if (auto it = cache.find(name); it != cache.end()) return &it->second;
  const std::string path = fixture_models::test_model_path(name, why);
  if (path.empty()) return nullptr;
  Loaded l;
  l.model = Model::load(path);
  l.ref = std::make_unique<reference::ReferenceModel>(*l.model);
  return &(cache[name] = std::move(l));
}

#define LOAD_OR_SKIP(var, name)                         \
  std::string why_##var;                                \
  const Loaded* var = load(name, &why_##var);           \
  if (!var) GTEST_SKIP() << why_##var;

// ---- Helpers ----------------------------------------------------------------------------

// Portable seeded draws: mt19937 output is specified by the standard, distributions are not.
struct Rng {
  std::mt19937 gen;
  explicit Rng(uint32_t seed) : gen(seed) {}
  int64_t below(int64_t n) { return static_cast<int64_t>(gen() % static_cast<uint64_t>(n)); }
};

std::vector<int32_t> random_tokens(Rng& rng, int64_t n, int64_t vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = static_cast<int32_t>(rng.below(vocab));
  return ids;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A random prompt and a random continuation of it, from one seeded stream.
struct Prompt {
  std::vector<int32_t> prompt, more;
};
Prompt random_prompt(uint32_t seed, int64_t prompt_len, int64_t more_len, int64_t vocab) {
  Rng rng(seed);
  Prompt p;
  p.prompt = random_tokens(rng, prompt_len, vocab);
  p.more = random_tokens(rng, more_len, vocab);
  return p;
}

double tolerance(KvType t) { return t == KvType::F32 ? kF32Tol : kF16Tol; }
reference::KvRounding rounding(KvType t) { return t == KvType::F32 ? reference::KvRounding::None : reference::KvRounding::F16; }

struct Stats {
  double max_err = 0.0;  // relative to the row's largest |reference logit|
  int rows = 0;
  int near_ties = 0;
};

// Compares one row of engine logits with the reference row.
void compare_row(const float* got, const std::vector<double>& want, double tol, const std::string& label, Stats& st) {
  ASSERT_FALSE(want.empty()) << label;
  double scale = 0.0, err = 0.0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < want.size(); ++i) err = std::max(err, std::fabs(static_cast<double>(got[i]) - want[i]));
  err /= std::max(scale, 1e-30);
  st.max_err = std::max(st.max_err, err);
  st.rows++;
  EXPECT_LE(err, tol) << label << ": max |logit error| / max |logit| = " << err;
  const size_t top_got = static_cast<size_t>(std::max_element(got, got + want.size()) - got);
  const size_t top_want = static_cast<size_t>(std::max_element(want.begin(), want.end()) - want.begin());
  if (top_got != top_want) {
    const double gap = (want[top_want] - want[top_got]) / scale;
    st.near_ties++;
    EXPECT_LE(gap, tol) << label << ": top-1 " << top_got << " but reference " << top_want << " (relative gap " << gap << ")";
  }
}

void report(const std::string& what, const Stats& st) {
  std::printf("[ max err  ] %-58s %.3e over %d rows (near-tie top-1 flips: %d)\n", what.c_str(), st.max_err, st.rows, st.near_ties);
}

// Compares the engine's logit rows `got` (n_vocab each) with the reference rows from position
// `first` on, and reports them as `what`; rows are labelled "<label>pos P".
void compare_rows(const std::vector<float>& got, const std::vector<std::vector<double>>& want, int64_t first, double tol,
                  const std::string& what, const std::string& label = "") {
  const auto V = static_cast<int64_t>(want.at(static_cast<size_t>(first)).size());
  Stats st;
  for (int64_t t = 0; t < static_cast<int64_t>(got.size()) / V; ++t)
    compare_row(got.data() + t * V, want.at(static_cast<size_t>(first + t)), tol, label + "pos " + std::to_string(first + t), st);
  report(what, st);
}

// Per (layer, kv head): the original positions a compaction kept.
using KeptPositions = std::vector<std::vector<std::set<int32_t>>>;

// Dense-cache mask equivalent to the ragged cache after compacting at position `cut`:
// queries before the cut saw everything (causal); later queries see the positions >= cut
// (never evicted) and, below it, only the kept ones.
reference::Visibility compacted_mask(const KeptPositions& kept, int32_t cut) {
  // [layer][head][position < cut] -> kept, for cheap lookups.
  std::vector<std::vector<std::vector<bool>>> bits(kept.size());
  for (size_t l = 0; l < kept.size(); ++l)
    for (const auto& head : kept[l]) {
      std::vector<bool> b(static_cast<size_t>(cut), false);
      for (int32_t p : head)
        if (p < cut) b[static_cast<size_t>(p)] = true;
      bits[l].push_back(std::move(b));
    }
  return [bits = std::move(bits), cut](int64_t l, int64_t h, int32_t q, int32_t k) {
    return q < cut || k >= cut || bits[static_cast<size_t>(l)][static_cast<size_t>(h)][static_cast<size_t>(k)];
  };
}

// Chooses, for every (layer, kv head), a random keep-set of a random size in [1, len] (the
// first run keeps exactly one slot, the second keeps all), checks positions() before, applies
// KvCache::compact and checks positions() after. Returns the kept positions; the same `seed`
// draws the same keep-sets.
KeptPositions compact_randomly(KvCache& cache, uint32_t seed) {
  Rng rng(seed);
  const auto& sh = cache.shape();
  KeptPositions kept(static_cast<size_t>(sh.n_layer), std::vector<std::set<int32_t>>(static_cast<size_t>(sh.n_head_kv)));
  int64_t index = 0;
  for (int64_t l = 0; l < sh.n_layer; ++l)
    for (int64_t h = 0; h < sh.n_head_kv; ++h, ++index) {
      const int64_t len = cache.length(l, h);
      const auto pos = cache.positions(l, h);
      EXPECT_TRUE(std::is_sorted(pos.begin(), pos.end()));
      const int64_t size = index == 0 ? 1 : index == 1 ? len : 1 + rng.below(len);
      std::vector<int32_t> slots(static_cast<size_t>(len));
      std::iota(slots.begin(), slots.end(), 0);
      for (int64_t i = 0; i < size; ++i) std::swap(slots[static_cast<size_t>(i)], slots[static_cast<size_t>(i + rng.below(len - i))]);
      slots.resize(static_cast<size_t>(size));
      std::sort(slots.begin(), slots.end());
      std::vector<int32_t> want;
      for (int32_t s : slots) {
        want.push_back(pos[static_cast<size_t>(s)]);
        kept[static_cast<size_t>(l)][static_cast<size_t>(h)].insert(pos[static_cast<size_t>(s)]);
      }
      cache.compact(l, h, slots);
      const auto after = cache.positions(l, h);
      EXPECT_EQ(std::vector<int32_t>(after.begin(), after.end()), want) << "layer " << l << " head " << h;
    }
  return kept;
}

size_t slot_bytes(const ModelConfig& c, KvType t) {
  const size_t e = t == KvType::F32 ? 4 : 2;
  return static_cast<size_t>(c.head_dim_k + c.head_dim_v) * e + sizeof(int32_t);
}

// Checks that lengths() report the kept positions' counts plus `extra`
// slots per run (new tokens appended after the compaction).
void expect_lengths(const KvCache& cache, const KeptPositions& kept, int64_t extra, const std::string& label) {
  const auto lengths = cache.lengths();
  ASSERT_EQ(lengths.size(), kept.size());
  for (size_t l = 0; l < kept.size(); ++l)
    for (size_t h = 0; h < kept[l].size(); ++h)
      EXPECT_EQ(lengths[l][h], static_cast<int64_t>(kept[l][h].size()) + extra) << label << " layer " << l << " head " << h;
}

enum class Feed { OneAtATime, Chunks3, OneChunk };
const char* feed_name(Feed f) { return f == Feed::OneAtATime ? "one-at-a-time" : f == Feed::Chunks3 ? "chunks-of-3" : "one-chunk"; }

// Evaluates `tokens` in the given way and returns their logits (tokens x n_vocab).
std::vector<float> feed(Session& s, const std::vector<int32_t>& tokens, Feed how) {
  std::vector<float> out;
  if (how == Feed::OneAtATime) {
    for (int32_t id : tokens) {
      const auto& row = s.eval({id});
      out.insert(out.end(), row.begin(), row.end());
    }
  } else {
    s.eval(tokens, &out);  // the session's chunk size decides the split
  }
  return out;
}

// The f32 reference over `ids`, the keys evicted by a compaction at `cut` masked out.
std::vector<std::vector<double>> masked_forward(const Loaded& m, const std::vector<int32_t>& ids, const KeptPositions& kept, int64_t cut) {
  return m.ref->forward(ids, compacted_mask(kept, static_cast<int32_t>(cut)), reference::KvRounding::None, cut);
}

// After a rollback to `at`, evaluating ids[at] gives the f32 reference's logits over ids[0..at].
void expect_next_exact(Session& s, const Loaded& m, const std::vector<int32_t>& ids, int32_t at, const std::string& label) {
  const auto& got = s.eval({ids[static_cast<size_t>(at)]});
  const auto want = m.ref->forward(std::vector<int32_t>(ids.begin(), ids.begin() + at + 1));
  Stats st;
  compare_row(got.data(), want[static_cast<size_t>(at)], kF32Tol, label, st);
}

// ---- Parameterised over models and cache types ------------------------------------------

struct Case {
  std::string model;
  KvType kv;
};

std::string case_name(const testing::TestParamInfo<Case>& info) {
  return info.param.model + "_" + kv_type_name(info.param.kv);
}

class RaggedCache : public testing::TestWithParam<Case> {};

const std::vector<Case> kCases = {
    {"stories260k", KvType::F32},      {"stories260k", KvType::F16},      {"synth_llama_f32", KvType::F32},
    {"synth_llama_f32", KvType::F16},  {"synth_qwen2_f32", KvType::F32},  {"synth_qwen2_f32", KvType::F16},
    {"synth_qwen3_f32", KvType::F32},  {"synth_qwen3_f32", KvType::F16},  {"synth_gemma3_f32", KvType::F32},
    {"synth_gemma3_f32", KvType::F16},
};

constexpr int64_t kPromptLen = 40;  // > the gemma3 tiny window (8) but below its trimming point (8 - 1 + 64)
constexpr int64_t kNewLen = 9;      // >= 8 in one chunk takes the attention kernel's blocked (GEMM) path

// No compression: Session logits at every prompt position equal the dense reference, for
// one-pass prefill (blocked attention) and chunks of 3 (decode attention path).
TEST_P(RaggedCache, UncompressedMatchesReference) {
  const Case& p = GetParam();
  LOAD_OR_SKIP(m, p.model);
  const int64_t V = m->model->config().n_vocab;
  Rng rng(7);
  const auto prompt = random_tokens(rng, kPromptLen, V);
  const auto want = m->ref->forward(prompt, reference::all_visible, rounding(p.kv));
  for (int64_t chunk : {int64_t{512}, int64_t{3}}) {
    Session s(*m->model, {.chunk = chunk, .kv_type_k = p.kv, .kv_type_v = p.kv});
    std::vector<float> got;
    s.eval(prompt, &got);
    ASSERT_EQ(got.size(), static_cast<size_t>(kPromptLen * V));
    compare_rows(got, want, 0, tolerance(p.kv), p.model + " " + kv_type_name(p.kv) + " uncompressed chunk " + std::to_string(chunk));
    if (p.kv == KvType::F16 && chunk == 512)  // what fp16 storage itself costs, for the record
      compare_rows(got, m->ref->forward(prompt), 0, kF16VsExactTol, p.model + " f16 cache vs unrounded reference");
  }
}

// Arbitrary keep-sets per (layer, head), then more tokens one at a time, in chunks of 3 and
// as one chunk: their logits equal the reference with the evicted keys masked out. Also the
// memory accounting after release_slack(0), and that appending after it works.
TEST_P(RaggedCache, CompactedMatchesMaskedReference) {
  const Case& p = GetParam();
  LOAD_OR_SKIP(m, p.model);
  const ModelConfig& c = m->model->config();
  const int64_t V = c.n_vocab;
  const auto [prompt, more] = random_prompt(11, kPromptLen, kNewLen, V);
  const auto all = concat(prompt, more);

  std::vector<std::vector<double>> want;
  KeptPositions first_kept;
  for (Feed how : {Feed::OneAtATime, Feed::Chunks3, Feed::OneChunk}) {
    Session s(*m->model, {.chunk = how == Feed::Chunks3 ? 3 : 512, .kv_type_k = p.kv, .kv_type_v = p.kv});
    s.eval(prompt);
    KvCache& cache = s.cache();
    for (const auto& layer : cache.lengths())
      for (int64_t len : layer) ASSERT_EQ(len, kPromptLen);

    const KeptPositions kept = compact_randomly(cache, 1234);  // the same keep-sets for every way of feeding
    if (first_kept.empty()) first_kept = kept;
    ASSERT_EQ(kept, first_kept);
    // The keep-sets differ in size from head to head and include 1 and all.
    std::set<size_t> sizes;
    for (const auto& layer : kept)
      for (const auto& head : layer) sizes.insert(head.size());
    EXPECT_TRUE(sizes.count(1) && sizes.count(static_cast<size_t>(kPromptLen)) && sizes.size() >= 3);

    cache.release_slack(0);
    size_t slots = 0;
    for (const auto& layer : kept)
      for (const auto& head : layer) slots += head.size();
    EXPECT_EQ(cache.bytes_used(), slots * slot_bytes(c, p.kv));
    EXPECT_EQ(cache.bytes_held(), cache.bytes_used());
    expect_lengths(cache, kept, 0, "after compaction");

    if (want.empty()) {
      want = m->ref->forward(all, compacted_mask(kept, static_cast<int32_t>(kPromptLen)), rounding(p.kv), kPromptLen);
      // Not vacuous: the evictions move the reference logits far more than the tolerance.
      const auto dense = m->ref->forward(all, reference::all_visible, rounding(p.kv), kPromptLen);
      double effect = 0.0;
      for (int64_t t = kPromptLen; t < kPromptLen + kNewLen; ++t) {
        double scale = 0.0, diff = 0.0;
        for (int64_t i = 0; i < V; ++i) {
          scale = std::max(scale, std::fabs(dense[static_cast<size_t>(t)][static_cast<size_t>(i)]));
          diff = std::max(diff, std::fabs(dense[static_cast<size_t>(t)][static_cast<size_t>(i)] - want[static_cast<size_t>(t)][static_cast<size_t>(i)]));
        }
        effect = std::max(effect, diff / scale);
      }
      std::printf("[ evicted  ] %-58s moves logits by %.3e\n", p.model.c_str(), effect);
      EXPECT_GT(effect, 10 * tolerance(p.kv));
    }
    const auto got = feed(s, more, how);
    ASSERT_EQ(got.size(), static_cast<size_t>(kNewLen * V));
    compare_rows(got, want, kPromptLen, tolerance(p.kv), p.model + " " + kv_type_name(p.kv) + " compacted, " + feed_name(how),
                 std::string(feed_name(how)) + " ");
    // Sliding runs of gemma3 stay below their trimming point here, so every run grew by kNewLen.
    expect_lengths(cache, kept, kNewLen, "after new tokens");
  }
}

// Rolling back after compaction keeps the compacted slots: to the compaction point (the same
// continuation gives the same logits bit for bit) and to a point inside the compacted prefix
// (a new continuation matches the reference masked with the kept slots below that point).
TEST_P(RaggedCache, RollbackKeepsCompactedSlots) {
  const Case& p = GetParam();
  LOAD_OR_SKIP(m, p.model);
  const int64_t V = m->model->config().n_vocab;
  Rng tokens_rng(21);
  const auto prompt = random_tokens(tokens_rng, kPromptLen, V);
  const auto more = random_tokens(tokens_rng, 6, V);
  Session s(*m->model, {.kv_type_k = p.kv, .kv_type_v = p.kv});
  s.eval(prompt);
  const KeptPositions kept = compact_randomly(s.cache(), 99);
  s.cache().release_slack(0);
  std::vector<float> first;
  s.eval(more, &first);
  s.rollback_to(static_cast<int32_t>(kPromptLen));
  EXPECT_EQ(s.next_position(), kPromptLen);
  expect_lengths(s.cache(), kept, 0, "rollback to the compaction point");
  for (size_t l = 0; l < kept.size(); ++l)
    for (size_t h = 0; h < kept[l].size(); ++h) {
      const auto pos = s.cache().positions(static_cast<int64_t>(l), static_cast<int64_t>(h));
      EXPECT_EQ(std::vector<int32_t>(pos.begin(), pos.end()), std::vector<int32_t>(kept[l][h].begin(), kept[l][h].end()));
    }
  std::vector<float> again;
  s.eval(more, &again);
  EXPECT_EQ(first, again);

  // Into the compacted prefix: only kept slots below the cut remain.
  const int32_t cut = 25;
  s.rollback_to(cut);
  KeptPositions below = kept;
  for (auto& layer : below)
    for (auto& head : layer) head.erase(head.lower_bound(cut), head.end());
  expect_lengths(s.cache(), below, 0, "rollback into the compacted prefix");
  const auto other = random_tokens(tokens_rng, 10, V);
  std::vector<float> got;
  s.eval(other, &got);
  const auto all = concat(std::vector<int32_t>(prompt.begin(), prompt.begin() + cut), other);
  ASSERT_EQ(got.size(), static_cast<size_t>(10 * V));
  compare_rows(got, m->ref->forward(all, compacted_mask(below, cut), rounding(p.kv), cut), cut, tolerance(p.kv),
               p.model + " " + kv_type_name(p.kv) + " rollback into compacted prefix");
}

INSTANTIATE_TEST_SUITE_P(Models, RaggedCache, testing::ValuesIn(kCases), case_name);

// ---- gemma3 sliding-window layers ---------------------------------------------------------

// After a prompt much longer than the window, in chunks, then token by token: sliding runs
// hold at most window - 1 + 64 slots (the engine's slack), always a contiguous suffix that
// covers the window, full layers hold everything, and the logits still match the reference.
TEST(RaggedCacheSliding, Gemma3RunsAreTrimmedAndLogitsMatch) {
  LOAD_OR_SKIP(m, "synth_gemma3_f32");
  const ModelConfig& c = m->model->config();
  const int64_t V = c.n_vocab, W = c.sliding_window;
  ASSERT_GT(W, 0);
  ASSERT_TRUE(std::count(c.layer_sliding.begin(), c.layer_sliding.end(), true) > 0 &&
              std::count(c.layer_sliding.begin(), c.layer_sliding.end(), false) > 0);
  const int64_t kSlack = 64, prompt_len = 150, decode_len = 80;
  const auto [prompt, more] = random_prompt(5, prompt_len, decode_len, V);
  Session s(*m->model, {.chunk = 16, .kv_type_k = KvType::F32, .kv_type_v = KvType::F32});  // the bound holds for chunks up to the slack
  int64_t max_sliding = 0;
  auto check_runs = [&](const std::string& when) {
    const int64_t n = s.next_position();
    for (int64_t l = 0; l < c.n_layer; ++l)
      for (int64_t h = 0; h < c.n_head_kv; ++h) {
        const auto pos = s.cache().positions(l, h);
        ASSERT_FALSE(pos.empty());
        EXPECT_EQ(pos.back(), n - 1) << when;
        EXPECT_EQ(pos.back() - pos.front() + 1, static_cast<int64_t>(pos.size())) << when << ": not contiguous";
        if (c.layer_sliding[static_cast<size_t>(l)]) {
          EXPECT_LE(static_cast<int64_t>(pos.size()), W - 1 + kSlack) << when << " layer " << l;
          EXPECT_GE(static_cast<int64_t>(pos.size()), std::min(n, W)) << when << " layer " << l << ": window not covered";
          max_sliding = std::max<int64_t>(max_sliding, static_cast<int64_t>(pos.size()));
        } else {
          EXPECT_EQ(static_cast<int64_t>(pos.size()), n) << when << " full layer " << l;
        }
      }
  };
  std::vector<float> got;
  s.eval(prompt, &got);
  check_runs("after the prompt");
  for (int64_t t = 0; t < decode_len; ++t) {
    const auto& row = s.eval({more[static_cast<size_t>(t)]});
    got.insert(got.end(), row.begin(), row.end());
    check_runs("decode step " + std::to_string(t));
  }
  EXPECT_EQ(max_sliding, W - 1 + kSlack);  // trimming did happen, at the bound
  s.cache().release_slack(0);
  EXPECT_LT(s.cache().bytes_held(), static_cast<size_t>(prompt_len + decode_len) * c.n_layer * c.n_head_kv * slot_bytes(c, KvType::F32));
  ASSERT_EQ(got.size(), static_cast<size_t>((prompt_len + decode_len) * V));
  compare_rows(got, m->ref->forward(concat(prompt, more)), 0, kF32Tol, "synth_gemma3_f32 f32 sliding trimmed, 230 positions");
}

// Compaction of every run (sliding ones included) after the sliding runs were trimmed, then
// decoding past further trims: the reference masks the evicted keys; positions trimmed by the
// window are outside every later query's window anyway.
TEST(RaggedCacheSliding, Gemma3CompactionAfterTrimming) {
  LOAD_OR_SKIP(m, "synth_gemma3_f32");
  const int64_t V = m->model->config().n_vocab, prompt_len = 150, decode_len = 40;
  const auto [prompt, more] = random_prompt(6, prompt_len, decode_len, V);
  Session s(*m->model, {.chunk = 16, .kv_type_k = KvType::F32, .kv_type_v = KvType::F32});
  s.eval(prompt);
  const KeptPositions kept = compact_randomly(s.cache(), 77);
  s.cache().release_slack(0);
  auto got = feed(s, std::vector<int32_t>(more.begin(), more.begin() + 10), Feed::OneChunk);  // blocked attention
  const auto rest = feed(s, std::vector<int32_t>(more.begin() + 10, more.end()), Feed::OneAtATime);
  got.insert(got.end(), rest.begin(), rest.end());
  ASSERT_EQ(got.size(), static_cast<size_t>(decode_len * V));
  compare_rows(got, masked_forward(*m, concat(prompt, more), kept, prompt_len), prompt_len, kF32Tol,
               "synth_gemma3_f32 f32 compacted after trimming");
}

// ---- Known engine problems (disabled until fixed; see the notes) ---------------------------

// prepare_append decides whether to trim a sliding layer from head 0's length only: once
// head 0 of a sliding layer is compacted, the other heads' runs grow past window - 1 + 64
// (up to about twice that) before anything is dropped. Memory only; logits stay correct.
TEST(RaggedCacheSliding, TrimmingBoundHoldsPerHeadAfterCompaction) {
  LOAD_OR_SKIP(m, "synth_gemma3_f32");
  const ModelConfig& c = m->model->config();
  const int64_t W = c.sliding_window;
  ASSERT_TRUE(c.layer_sliding[0]);
  Rng rng(9);
  const auto ids = random_tokens(rng, 130, c.n_vocab);
  Session s(*m->model, {.kv_type_k = KvType::F32, .kv_type_v = KvType::F32});
  s.eval(std::vector<int32_t>(ids.begin(), ids.begin() + 60));
  const int32_t last[] = {59};
  s.cache().compact(0, 0, last);  // sliding layer 0, head 0 keeps its newest slot
  int64_t longest = 0;
  for (size_t t = 60; t < ids.size(); ++t) {
    s.eval({ids[t]});
    for (int64_t h = 0; h < c.n_head_kv; ++h) longest = std::max(longest, s.cache().length(0, h));
  }
  EXPECT_LE(longest, W - 1 + 64);  // fails today with 130: head 1 is trimmed only when head 0 reaches the bound
}

// Session::rollback_to to a position whose window the sliding runs no longer hold (they were
// trimmed) silently computes wrong logits: the sliding layers see none of the keys before the
// rollback point. Either refusing (an Error) or computing the right logits would be correct.
TEST(RaggedCacheSliding, RollbackBeyondTrimmedWindowIsRefusedOrExact) {
  LOAD_OR_SKIP(m, "synth_gemma3_f32");
  const int64_t V = m->model->config().n_vocab;
  Rng rng(10);
  const auto ids = random_tokens(rng, 150, V);
  Session s(*m->model, {.chunk = 16, .kv_type_k = KvType::F32, .kv_type_v = KvType::F32});  // sliding runs get trimmed during the prefill
  s.eval(ids);
  try {
    s.rollback_to(40);
  } catch (const Error&) {
    return;  // refused: fine
  }
  expect_next_exact(s, *m, ids, 40, "pos 40 after rollback");
}

// A protected rollback point (the end of a context several questions are asked about) keeps
// its window through long answers, so rolling back to it stays exact.
TEST(RaggedCacheSliding, ProtectedRollbackPointSurvivesLongAnswers) {
  LOAD_OR_SKIP(m, "synth_gemma3_f32");
  const int64_t V = m->model->config().n_vocab;
  Rng rng(11);
  const auto ids = random_tokens(rng, 150, V);
  Session s(*m->model, {.chunk = 16, .kv_type_k = KvType::F32, .kv_type_v = KvType::F32});
  s.eval(std::vector<int32_t>(ids.begin(), ids.begin() + 40));
  s.cache().protect_query_position(40);
  for (size_t i = 40; i < ids.size(); ++i) s.eval({ids[i]});  // an "answer" far longer than the window
  ASSERT_NO_THROW(s.rollback_to(40));
  expect_next_exact(s, *m, ids, 40, "pos 40 after protected rollback");
}

// ---- Long runs: the decode path's split key ranges ------------------------------------------

// With many threads and runs longer than 1024 slots the decode attention splits each head's
// key range and merges partial softmaxes; heavy, uneven compaction must not upset that.
TEST(RaggedCacheLong, SplitDecodeOverCompactedRunsMatchesReference) {
  LOAD_OR_SKIP(m, "stories260k");
  const int64_t V = m->model->config().n_vocab, prompt_len = 1100, decode_len = 4;
  const auto [prompt, more] = random_prompt(8, prompt_len, decode_len, V);
  // ceil(2 * 8 / 8 heads) = 2 splits once a run is >= 1024 slots long
  Session s(*m->model, {.threads = 8, .kv_type_k = KvType::F32, .kv_type_v = KvType::F32});
  s.eval(prompt);
  // The first run keeps 1 slot, the second all; the rest random (most keep hundreds).
  const KeptPositions kept = compact_randomly(s.cache(), 3);
  const auto got = feed(s, more, Feed::OneAtATime);
  ASSERT_EQ(got.size(), static_cast<size_t>(decode_len * V));
  compare_rows(got, masked_forward(*m, concat(prompt, more), kept, prompt_len), prompt_len, kF32Tol,
               "stories260k f32 1100 positions, 8 threads, compacted");
}

// The reference's fp16 rounding agrees with IEEE half (spot checks that do not involve the
// engine's conversion code).
TEST(ReferenceForward, RoundToF16) {
  EXPECT_EQ(reference::round_to_f16(1.0), 1.0);
  EXPECT_EQ(reference::round_to_f16(1.0 + std::ldexp(1.0, -11)), 1.0);                              // tie -> even
  EXPECT_EQ(reference::round_to_f16(1.0 + 3 * std::ldexp(1.0, -11)), 1.0 + std::ldexp(1.0, -9));    // tie -> even (up)
  EXPECT_EQ(reference::round_to_f16(65504.0), 65504.0);
  EXPECT_TRUE(std::isinf(reference::round_to_f16(65520.0)));
  EXPECT_EQ(reference::round_to_f16(std::ldexp(1.0, -24)), std::ldexp(1.0, -24));                   // smallest subnormal
  EXPECT_EQ(reference::round_to_f16(std::ldexp(1.0, -26)), 0.0);
  EXPECT_EQ(reference::round_to_f16(-0.1), -0.0999755859375);
}

}  // namespace
