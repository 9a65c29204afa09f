// The CUDA kernels' own source (kernels/cuda/*.cu), compiled for the CPU emulation of the CUDA
// execution model (kernels/cuda/emulation.h: each block's threads as fibers), against the CPU
// kernels: the indexing, barriers, warp reductions, split-K combination and row encodings that
// the GPU runs are checked on every machine, GPU or not. What the emulation cannot show (timing,
// memory ordering between blocks, the device's math intrinsics) is left to scripts/gpu/check.sh.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/attention.h"
#include "kernels/fp16.h"
#include "kernels/ops.h"

#define KVSQ_CUDA_EMULATE 1  // the emulated kernels (emulated_*.cpp): namespace kernels::cuda::emulated
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/ragged_attention.h"
#include "kernels/cuda/ragged_runs.h"

namespace ec = kvsqueeze::kernels::cuda::emulated;
namespace kk = kvsqueeze::kernels;
using kvsqueeze::KvRun;
using kvsqueeze::KvType;

namespace {

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

void expect_near_rel(const std::vector<float>& want, const std::vector<float>& got, double tol, const char* what) {
  ASSERT_EQ(want.size(), got.size());
  double scale = 1e-6;
  for (float w : want) scale = std::max(scale, static_cast<double>(std::fabs(w)));
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], tol * scale) << what << " at " << i;
}

}  // namespace

TEST(EmulatedCudaKernels, ElementwiseMatchTheCpu) {
  const int64_t rows = 3, n = 300;
  const auto x = random_floats(rows * n, 1), w = random_floats(n, 2);
  std::vector<float> want(rows * n), got(rows * n);
  kk::rms_norm_rows(x.data(), w.data(), want.data(), rows, n, 1e-6f);
  ASSERT_EQ(ec::rms_norm_rows(x.data(), w.data(), got.data(), rows, n, 1e-6f, nullptr), cudaSuccess);
  expect_near_rel(want, got, 1e-6, "rms norm");

  const int64_t d = 64, half = d / 2, heads = 3;
  const std::vector<int32_t> pos = {0, 5, 1000, 40000};
  const int64_t t = static_cast<int64_t>(pos.size());
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * static_cast<float>(i) / static_cast<float>(d));
  std::vector<float> cos_w(t * half), sin_w(t * half), cos_g(t * half), sin_g(t * half);
  kk::rope_tables(pos.data(), t, inv_freq.data(), d, cos_w.data(), sin_w.data());
  ASSERT_EQ(ec::rope_tables(pos.data(), t, inv_freq.data(), d, cos_g.data(), sin_g.data(), nullptr), cudaSuccess);
  expect_near_rel(cos_w, cos_g, 1e-6, "rope cos");
  expect_near_rel(sin_w, sin_g, 1e-6, "rope sin");
  for (bool neox : {true, false}) {
    auto a = random_floats(t * heads * d, 3), b = a;
    for (int64_t r = 0; r < t; ++r)
      for (int64_t h = 0; h < heads; ++h)
        kk::rope_apply(a.data() + (r * heads + h) * d, d, cos_w.data() + r * half, sin_w.data() + r * half,
                       neox ? kk::RopeStyle::Neox : kk::RopeStyle::Normal);
    ASSERT_EQ(ec::rope_apply(b.data(), t, heads, d, cos_w.data(), sin_w.data(), neox, nullptr), cudaSuccess);
    expect_near_rel(a, b, 1e-6, neox ? "rope neox" : "rope normal");
  }
  for (bool gelu : {false, true}) {
    auto g1 = random_floats(1000, 4, 3.0f), g2 = g1;
    const auto up = random_floats(1000, 5);
    if (gelu) kk::gelu_tanh_mul(g1.data(), up.data(), 1000);
    else kk::silu_mul(g1.data(), up.data(), 1000);
    ASSERT_EQ(ec::gated_activation(g2.data(), up.data(), 1000, gelu, nullptr), cudaSuccess);
    expect_near_rel(g1, g2, 1e-5, gelu ? "gelu" : "silu");
  }
  auto s1 = random_floats(6 * 10, 6), s2 = s1;
  const auto bias = random_floats(10, 7);
  for (int64_t r = 0; r < 6; ++r) kk::add_inplace(s1.data() + r * 10, bias.data(), 10);
  ASSERT_EQ(ec::add_rows(s2.data(), bias.data(), 6, 10, nullptr), cudaSuccess);
  expect_near_rel(s1, s2, 0, "bias");
  const std::vector<int64_t> pick = {5, 0, 5, 2};
  std::vector<float> gathered(4 * 10);
  ASSERT_EQ(ec::gather_rows(s1.data(), pick.data(), 4, 10, gathered.data(), nullptr), cudaSuccess);
  for (size_t i = 0; i < pick.size(); ++i)
    for (int c = 0; c < 10; ++c) ASSERT_EQ(gathered[i * 10 + c], s1[pick[i] * 10 + c]);
  std::vector<uint16_t> bf(s1.size());
  ASSERT_EQ(ec::f32_to_bf16(s1.data(), static_cast<int64_t>(s1.size()), bf.data(), nullptr), cudaSuccess);
  for (size_t i = 0; i < s1.size(); ++i) ASSERT_EQ(bf[i], kk::fp32_to_bf16(s1[i]));
}

// Appends to three runs (all channels; a channel subset; centred keys) and gathers rows back.
TEST(EmulatedCudaKernels, AppendAndGatherRows) {
  const int dk = 16, dv = 8, cap = 10, n = 4, first = 3;
  const std::vector<int32_t> channels = {1, 4, 5, 9, 12, 15};
  const auto offset = random_floats(dk, 8);
  std::vector<std::vector<uint16_t>> k(3, std::vector<uint16_t>(cap * dk)), v(3, std::vector<uint16_t>(cap * dv));
  std::vector<std::vector<int32_t>> p(3, std::vector<int32_t>(cap));
  ec::RunTable t;
  t.count = 3;
  t.k_type = t.v_type = ec::RowType::F16;
  t.head_dim_k = dk;
  t.head_dim_v = dv;
  for (int h = 0; h < 3; ++h)
    t.run[h] = ec::DeviceRun{k[h].data(), v[h].data(), p[h].data(), h == 1 ? channels.data() : nullptr,
                             h == 2 ? offset.data() : nullptr, first, h == 1 ? static_cast<int32_t>(channels.size()) : dk};
  const auto keys = random_floats(n * 3 * dk, 9), values = random_floats(n * 3 * dv, 10);
  const std::vector<int32_t> pos = {7, 8, 11, 20};
  ASSERT_EQ(ec::append_rows(t, keys.data(), values.data(), pos.data(), n, nullptr), cudaSuccess);
  for (int h = 0; h < 3; ++h)
    for (int j = 0; j < n; ++j) {
      EXPECT_EQ(p[h][first + j], pos[j]);
      const int ks = t.run[h].k_stride;
      for (int i = 0; i < ks; ++i) {
        const int c = h == 1 ? channels[i] : i;
        const float want = keys[(j * 3 + h) * dk + c] - (h == 2 ? offset[c] : 0.0f);
        ASSERT_EQ(k[h][(first + j) * ks + i], kk::fp32_to_fp16(want)) << h << " " << j << " " << i;
      }
      for (int i = 0; i < dv; ++i) ASSERT_EQ(v[h][(first + j) * dv + i], kk::fp32_to_fp16(values[(j * 3 + h) * dv + i]));
    }
  const std::vector<int32_t> keep = {3, 5, 6};
  std::vector<uint16_t> out(keep.size() * dk);
  ASSERT_EQ(ec::gather_rows_bytes(k[0].data(), keep.data(), 3, dk * 2, out.data(), nullptr), cudaSuccess);
  for (size_t i = 0; i < keep.size(); ++i)
    for (int c = 0; c < dk; ++c) ASSERT_EQ(out[i * dk + c], k[0][keep[i] * dk + c]);
}

namespace {

struct RunData {  // one run's rows in a row type, readable by both kernels
  std::vector<uint8_t> k, v;
  std::vector<int32_t> pos, channels;
};

// Encodes random rows as `type` (f32 raw, f16/bf16 rounded).
std::vector<uint8_t> encode(const std::vector<float>& x, KvType type) {
  if (type == KvType::F32) {
    std::vector<uint8_t> out(x.size() * 4);
    std::memcpy(out.data(), x.data(), out.size());
    return out;
  }
  std::vector<uint8_t> out(x.size() * 2);
  auto* h = reinterpret_cast<uint16_t*>(out.data());
  for (size_t i = 0; i < x.size(); ++i) h[i] = type == KvType::F16 ? kk::fp32_to_fp16(x[i]) : kk::fp32_to_bf16(x[i]);
  return out;
}

void check_attention(KvType type, int64_t n_q, int32_t window, bool pruned, int sm_count) {
  const int64_t hq = 6, hkv = 2, dk = 32, dv = 32;
  const std::vector<int64_t> lens = {45, 70};
  std::vector<RunData> data(hkv);
  std::vector<KvRun> cpu_runs(hkv);
  ec::RunTable table;
  table.count = static_cast<int32_t>(hkv);
  table.k_type = table.v_type = type == KvType::F32 ? ec::RowType::F32 : type == KvType::F16 ? ec::RowType::F16 : ec::RowType::BF16;
  table.head_dim_k = static_cast<int32_t>(dk);
  table.head_dim_v = static_cast<int32_t>(dv);
  std::mt19937 rng(static_cast<uint32_t>(n_q * 31 + window));
  for (int64_t h = 0; h < hkv; ++h) {
    RunData& r = data[h];
    const int64_t len = lens[h];
    if (pruned && h == 1)
      for (int32_t c = 0; c < dk; c += 3) r.channels.push_back(c);  // a ThinK-pruned run: 11 channels (unaligned rows)
    const int64_t ks = r.channels.empty() ? dk : static_cast<int64_t>(r.channels.size());
    r.k = encode(random_floats(len * ks, 100 + h), type);
    r.v = encode(random_floats(len * dv, 200 + h), type);
    int32_t p = 0;
    for (int64_t i = 0; i < len; ++i) r.pos.push_back(p += 1 + static_cast<int32_t>(rng() % 3));  // kept slots: gaps
    KvRun& c = cpu_runs[h];
    c.k = r.k.data();
    c.v = r.v.data();
    c.pos = r.pos.data();
    c.len = len;
    c.k_stride = ks;
    c.v_stride = dv;
    c.k_type = c.v_type = type;
    c.k_channels = r.channels.empty() ? nullptr : r.channels.data();
    table.run[h] = ec::DeviceRun{r.k.data(), r.v.data(), r.pos.data(), c.k_channels, nullptr, len, static_cast<int32_t>(ks)};
  }
  const auto q = random_floats(n_q * hq * dk, 300);
  std::vector<int32_t> q_pos(n_q);
  for (int64_t i = 0; i < n_q; ++i) q_pos[i] = 60 + static_cast<int32_t>(i) * 7;  // some queries see only part of a run
  kvsqueeze::AttentionShape shape;
  shape.n_head = hq;
  shape.n_head_kv = hkv;
  shape.head_dim_k = dk;
  shape.head_dim_v = dv;
  shape.scale = 0.2f;
  shape.window = window;
  std::vector<float> want(n_q * hq * dv), want_lse(n_q * hq), got(n_q * hq * dv), got_lse(n_q * hq);
  kk::attention(shape, q.data(), q_pos.data(), n_q, cpu_runs.data(), want.data(), want_lse.data());
  const int64_t splits = ec::attention_splits(n_q, hkv, 70, sm_count);
  std::vector<float> scratch(ec::attention_scratch_floats(n_q, hq, splits, dv));
  ec::AttentionArgs args;
  args.n_head = static_cast<int32_t>(hq);
  args.scale = shape.scale;
  args.window = window;
  ASSERT_EQ(ec::attention(args, table, q.data(), q_pos.data(), n_q, 70, sm_count, got.data(), got_lse.data(), scratch.data(), nullptr),
            cudaSuccess);
  const std::string what = std::string("attention type ") + std::to_string(static_cast<int>(type)) + " n_q " + std::to_string(n_q) +
                           " window " + std::to_string(window) + " splits " + std::to_string(splits);
  expect_near_rel(want, got, 1e-4, what.c_str());
  expect_near_rel(want_lse, got_lse, 1e-5, (what + " lse").c_str());
}

}  // namespace

TEST(EmulatedCudaKernels, RaggedAttentionMatchesTheCpuKernel) {
  for (KvType type : {KvType::F16, KvType::BF16, KvType::F32})
    for (int sm_count : {1, 40}) {  // one split per block, and many (split-K combined)
      check_attention(type, 1, 0, false, sm_count);   // decode
      check_attention(type, 5, 0, true, sm_count);    // a prefill chunk, one run channel-pruned
      check_attention(type, 3, 16, false, sm_count);  // a sliding window
    }
}
