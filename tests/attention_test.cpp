// The attention kernel over ragged runs against a naive double-precision softmax attention, in
// every kernel variant and over every KV element type: the reference reads the values the
// stored rows decode to (rounded or quantized), so attention over quantized runs must equal
// attention over their dequantized values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "kernels/attention.h"
#include "kernels/dequantize.h"
#include "kernels/hadamard.h"
#include "kernels/kv_quantize.h"
#include "kernels/kv_rows.h"
#include "isa_variants.h"
#include "kvsqueeze/kv_cache.h"

using namespace kvsqueeze::kernels;

namespace {

struct Case {
  int64_t n_head, n_head_kv, dk, dv, n_q;
  int32_t window;
  KvType type;
  int32_t past = 300;  // positions before the chunk, of which each head keeps a random subset
  bool rotated = false;  // keys and values stored Walsh-Hadamard rotated
};

struct Fixture {
  AttentionShape shape;
  std::vector<float> q;
  std::vector<int32_t> q_pos;
  std::vector<std::vector<float>> k32, v32;      // the values the stored rows decode to, per KV head
  std::vector<std::vector<uint8_t>> kraw, vraw;  // the stored rows, in the case's type
  std::vector<std::vector<int32_t>> pos;
  std::vector<KvRun> runs;
};

// Rows of d floats stored as `type` (rotated first when asked) into raw, and the floats replaced
// by what the rows decode to (rotated back).
void encode(KvType type, int64_t d, std::vector<float>& rows, std::vector<uint8_t>& raw, bool rotate = false) {
  const int64_t n = static_cast<int64_t>(rows.size()) / d;
  const size_t row_bytes = kvsqueeze::kv_row_bytes(type, d);
  raw.assign(static_cast<size_t>(n) * row_bytes, 0);
  for (int64_t i = 0; i < n; ++i) {
    float* x = rows.data() + i * d;
    uint8_t* out = raw.data() + static_cast<size_t>(i) * row_bytes;
    if (rotate) hadamard_rotate(x, d);
    switch (type) {
      case KvType::F32: std::memcpy(out, x, row_bytes); break;
      case KvType::F16:
        for (int64_t j = 0; j < d; ++j) reinterpret_cast<uint16_t*>(out)[j] = fp32_to_fp16(x[j]);
        break;
      case KvType::BF16:
        for (int64_t j = 0; j < d; ++j) reinterpret_cast<uint16_t*>(out)[j] = fp32_to_bf16(x[j]);
        break;
      case KvType::Q8_0: quantize_row_q8_0(x, out, d); break;
      case KvType::Q4_0: quantize_row_q4_0(x, out, d); break;
      case KvType::KIVI2: ADD_FAILURE() << "KIVI2 runs are built through a cache (kivi_cache_test.cpp)"; break;
    }
    row_to_f32(out, 0, d, d, type, x);
    if (rotate) hadamard_rotate(x, d);
  }
}

// A ragged cache: each KV head keeps a different random subset of positions [0, past), then
// the chunk's own n_q positions follow (as after compression and appending a chunk).
Fixture make(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Fixture f;
  f.shape = {c.n_head, c.n_head_kv, c.dk, c.dv, 1.0f / std::sqrt(static_cast<float>(c.dk)), c.window};
  const int32_t past = c.past;
  for (int64_t t = 0; t < c.n_q; ++t) f.q_pos.push_back(past + static_cast<int32_t>(t));
  f.q.resize(static_cast<size_t>(c.n_q * c.n_head * c.dk));
  for (auto& x : f.q) x = 2.0f * normal(rng);
  f.k32.resize(static_cast<size_t>(c.n_head_kv));
  f.v32 = f.k32;
  f.kraw.resize(f.k32.size());
  f.vraw = f.kraw;
  f.pos.resize(f.k32.size());
  for (int64_t h = 0; h < c.n_head_kv; ++h) {
    std::bernoulli_distribution keep(h == 0 ? 1.0 : 0.3 + 0.2 * static_cast<double>(h));
    auto& p = f.pos[static_cast<size_t>(h)];
    for (int32_t i = 0; i < past; ++i)
      if (keep(rng)) p.push_back(i);
    for (int32_t x : f.q_pos) p.push_back(x);
    auto& k = f.k32[static_cast<size_t>(h)];
    auto& v = f.v32[static_cast<size_t>(h)];
    for (size_t i = 0; i < p.size() * static_cast<size_t>(c.dk); ++i) k.push_back(normal(rng));
    for (size_t i = 0; i < p.size() * static_cast<size_t>(c.dv); ++i) v.push_back(normal(rng));
    encode(c.type, c.dk, k, f.kraw[static_cast<size_t>(h)], c.rotated);  // k, v now hold what the rows decode to
    encode(c.type, c.dv, v, f.vraw[static_cast<size_t>(h)], c.rotated);
  }
  for (int64_t h = 0; h < c.n_head_kv; ++h) {
    KvRun r;
    r.k = f.kraw[static_cast<size_t>(h)].data();
    r.v = f.vraw[static_cast<size_t>(h)].data();
    r.pos = f.pos[static_cast<size_t>(h)].data();
    r.len = static_cast<int64_t>(f.pos[static_cast<size_t>(h)].size());
    r.k_stride = c.dk;
    r.v_stride = c.dv;
    r.k_type = c.type;
    r.v_type = c.type;
    r.k_rotated = c.rotated;
    r.v_rotated = c.rotated;
    f.runs.push_back(r);
  }
  return f;
}

// Naive softmax attention; also the probabilities, for the statistics.
void reference(const Fixture& f, std::vector<double>& out, std::vector<double>& lse, std::vector<std::vector<double>>& probs) {
  const auto& s = f.shape;
  const int64_t n_q = static_cast<int64_t>(f.q_pos.size()), group = s.n_head / s.n_head_kv;
  out.assign(static_cast<size_t>(n_q * s.n_head * s.head_dim_v), 0.0);
  lse.assign(static_cast<size_t>(n_q * s.n_head), 0.0);
  probs.assign(static_cast<size_t>(n_q * s.n_head), {});
  for (int64_t t = 0; t < n_q; ++t)
    for (int64_t h = 0; h < s.n_head; ++h) {
      const int64_t kh = h / group;
      const auto& pos = f.pos[static_cast<size_t>(kh)];
      std::vector<double> sc(pos.size(), -INFINITY);
      double m = -INFINITY;
      for (size_t j = 0; j < pos.size(); ++j) {
        const bool visible = pos[j] <= f.q_pos[static_cast<size_t>(t)] &&
                             (s.window == 0 || f.q_pos[static_cast<size_t>(t)] - pos[j] < s.window);
        if (!visible) continue;
        double d = 0;
        for (int64_t i = 0; i < s.head_dim_k; ++i)
          d += static_cast<double>(f.q[static_cast<size_t>((t * s.n_head + h) * s.head_dim_k + i)]) *
               f.k32[static_cast<size_t>(kh)][j * static_cast<size_t>(s.head_dim_k) + static_cast<size_t>(i)];
        sc[j] = d * s.scale;
        m = std::max(m, sc[j]);
      }
      double z = 0;
      for (double x : sc) z += std::isinf(x) ? 0.0 : std::exp(x - m);
      auto& p = probs[static_cast<size_t>(t * s.n_head + h)];
      p.assign(pos.size(), 0.0);
      for (size_t j = 0; j < pos.size(); ++j) p[j] = std::isinf(sc[j]) ? 0.0 : std::exp(sc[j] - m) / z;
      lse[static_cast<size_t>(t * s.n_head + h)] = m + std::log(z);
      for (size_t j = 0; j < pos.size(); ++j)
        for (int64_t i = 0; i < s.head_dim_v; ++i)
          out[static_cast<size_t>((t * s.n_head + h) * s.head_dim_v + i)] +=
              p[j] * f.v32[static_cast<size_t>(kh)][j * static_cast<size_t>(s.head_dim_v) + static_cast<size_t>(i)];
    }
}

class AttentionKernel : public isa_variants::TestWith<Case> {};

std::string case_name(const Case& c) {
  const char* type = kvsqueeze::kv_type_name(c.type);
  return "h" + std::to_string(c.n_head) + "kv" + std::to_string(c.n_head_kv) + "_d" + std::to_string(c.dk) + "x" +
         std::to_string(c.dv) + "_q" + std::to_string(c.n_q) + "_w" + std::to_string(c.window) + "_past" +
         std::to_string(c.past) + "_" + type + (c.rotated ? "_rotated" : "");
}

}  // namespace

TEST_P(AttentionKernel, MatchesNaiveSoftmaxAttentionAndStatistics) {
  const Case c = param();
  const Fixture f = make(c, 1234);
  const auto& s = f.shape;
  std::vector<float> out(static_cast<size_t>(c.n_q * c.n_head * c.dv)), lse(static_cast<size_t>(c.n_q * c.n_head));
  std::vector<double> ref_out, ref_lse;
  std::vector<std::vector<double>> ref_p;
  reference(f, ref_out, ref_lse, ref_p);
  attention(s, f.q.data(), f.q_pos.data(), c.n_q, f.runs.data(), out.data(), lse.data());
  // Decode over q8_0/q4_0 keys may score in integers with the queries rounded to 16 bits
  // (kernels/kv_int_scores.h): scores off by up to ~1e-4 relative, outputs and the log-sum-exp
  // the probabilities below are normalised by as much.
  const bool integer_scores = c.n_q < 8 && (c.type == KvType::Q8_0 || c.type == KvType::Q4_0);
  const double out_tol = integer_scores ? 1e-4 : 2e-5;
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref_out[i], out_tol * (1 + std::fabs(ref_out[i]))) << i;
  for (size_t i = 0; i < lse.size(); ++i) ASSERT_NEAR(lse[i], ref_lse[i], 1e-4 * (1 + std::fabs(ref_lse[i]))) << i;

  ProbabilityRequest req;
  req.window_rows = 5;
  req.column_sums = true;
  Probabilities probs;
  attention_probabilities(s, f.q.data(), f.q_pos.data(), c.n_q, f.runs.data(), lse.data(), req, probs);
  const int64_t w = std::min<int64_t>(5, c.n_q), group = c.n_head / c.n_head_kv;
  ASSERT_EQ(probs.window_rows, w);
  for (int64_t h = 0; h < c.n_head; ++h) {
    const size_t len = f.pos[static_cast<size_t>(h / group)].size();
    for (int64_t r = 0; r < w; ++r)
      for (size_t j = 0; j < len; ++j)
        ASSERT_NEAR(probs.window[static_cast<size_t>(h)][static_cast<size_t>(r) * len + j],
                    ref_p[static_cast<size_t>((c.n_q - w + r) * c.n_head + h)][j],
                    2e-6 + (integer_scores ? 1e-4 * ref_p[static_cast<size_t>((c.n_q - w + r) * c.n_head + h)][j] : 0.0))
            << "head " << h << " row " << r << " slot " << j;
    for (size_t j = 0; j < len; ++j) {
      double want = 0;
      for (int64_t t = 0; t < c.n_q; ++t) want += ref_p[static_cast<size_t>(t * c.n_head + h)][j];
      ASSERT_NEAR(probs.column_sums[static_cast<size_t>(h)][j], want, 1e-5 * (1 + want)) << "head " << h << " slot " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionKernel,
    ::testing::Combine(::testing::Values(Case{4, 4, 16, 16, 1, 0, KvType::F32},        // decode, MHA
                                         Case{8, 2, 32, 32, 3, 0, KvType::F32},        // few queries, GQA
                                         Case{8, 2, 32, 32, 70, 0, KvType::F32},       // blocked prefill path, GQA
                                         Case{4, 1, 64, 64, 20, 0, KvType::F16},       // gemma-like MQA, fp16 cache
                                         Case{4, 1, 64, 64, 1, 0, KvType::F16, 3000},  // fp16 decode, long enough to split keys
                                         Case{6, 2, 16, 24, 40, 32, KvType::F32},      // sliding window, dk != dv
                                         Case{6, 2, 16, 16, 2, 7, KvType::F16},        // sliding window decode
                                         Case{8, 2, 64, 64, 1, 0, KvType::Q8_0},       // quantized caches: decode,
                                         Case{8, 2, 64, 64, 70, 0, KvType::Q8_0},      // blocked prefill,
                                         Case{4, 1, 64, 32, 1, 0, KvType::Q4_0, 3000}, // long decode,
                                         Case{6, 2, 32, 32, 40, 32, KvType::Q4_0},     // sliding window prefill
                                         Case{8, 2, 64, 64, 1, 0, KvType::Q4_0, 300, true},   // rotated keys: decode,
                                         Case{8, 2, 96, 64, 70, 0, KvType::Q8_0, 300, true},  // prefill (blocks of 32),
                                         Case{4, 1, 64, 64, 20, 0, KvType::F16, 300, true},   // a float cache
                                         Case{4, 1, 32, 32, 3, 0, KvType::BF16}),      // bf16
                       ::testing::ValuesIn(isa_variants::all())),
    isa_variants::name_with<Case>(case_name));
