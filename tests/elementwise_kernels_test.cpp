// The element-wise and row kernels (ops.h, divergence.h, kv_rows.h) against double-precision
// references, in every kernel variant: lengths around the vector widths cover bodies and tails.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "isa_variants.h"
#include "kernels/attention.h"
#include "kernels/divergence.h"
#include "kernels/fp16.h"
#include "kernels/kv_rows.h"
#include "kernels/ops.h"

using namespace kvsqueeze::kernels;

namespace {

const int64_t kLengths[] = {1, 7, 8, 15, 16, 17, 33, 100, 1000, 5000};

std::vector<float> random_floats(int64_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = nd(rng);
  return x;
}

// |got - want| <= rel * |want| + abs
void expect_close(double got, double want, double rel, double abs, const std::string& where) {
  EXPECT_LE(std::fabs(got - want), rel * std::fabs(want) + abs) << where << ": got " << got << ", want " << want;
}

class ElementwiseKernels : public isa_variants::Test {};

}  // namespace

INSTANTIATE_TEST_SUITE_P(Variants, ElementwiseKernels, ::testing::ValuesIn(isa_variants::all()), isa_variants::name);

TEST_P(ElementwiseKernels, GatedActivations) {
  for (int64_t n : kLengths) {
    const auto g = random_floats(n, 4.0f, 1), u = random_floats(n, 1.0f, 2);
    auto silu = g, gelu = g;
    silu_mul(silu.data(), u.data(), n);
    gelu_tanh_mul(gelu.data(), u.data(), n);
    for (size_t i = 0; i < g.size(); ++i) {
      const double x = g[i], y = u[i];
      expect_close(silu[i], x / (1 + std::exp(-x)) * y, 1e-5, 1e-7, "silu_mul n=" + std::to_string(n));
      const double want = 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))) * y;
      // 1 + tanh cancels for negative x: the float formula's error is relative to |x y|.
      expect_close(gelu[i], want, 1e-5, 1e-6 * std::fabs(x * y) + 1e-9, "gelu_tanh_mul n=" + std::to_string(n));
    }
  }
}

TEST_P(ElementwiseKernels, SoftmaxAndDivergences) {
  for (int64_t n : kLengths) {
    const auto p = random_floats(n, 3.0f, 3), q = random_floats(n, 3.0f, 4);
    double mp = -INFINITY, mq = -INFINITY;
    for (size_t i = 0; i < p.size(); ++i) mp = std::max(mp, double(p[i])), mq = std::max(mq, double(q[i]));
    double zp = 0, zq = 0;
    for (size_t i = 0; i < p.size(); ++i) zp += std::exp(p[i] - mp), zq += std::exp(q[i] - mq);
    const double lse_p = mp + std::log(zp), lse_q = mq + std::log(zq);
    double kl = 0;
    for (size_t i = 0; i < p.size(); ++i) kl += std::exp(p[i] - lse_p) * (double(p[i]) - q[i]);
    kl += lse_q - lse_p;
    const std::string where = " n=" + std::to_string(n);
    auto sm = p;
    softmax(sm.data(), n);
    for (size_t i = 0; i < p.size(); ++i) expect_close(sm[i], std::exp(p[i] - lse_p), 1e-5, 1e-9, "softmax" + where);
    expect_close(log_sum_exp(p.data(), n), lse_p, 0, 1e-5, "log_sum_exp" + where);
    expect_close(kl_divergence_logits(p.data(), lse_p, q.data(), lse_q, n), kl, 1e-5, 1e-6, "kl_divergence_logits" + where);
    EXPECT_EQ(kl_divergence_logits(p.data(), lse_p, p.data(), lse_p, n), 0.0) << "KL of identical inputs" << where;
  }
}

TEST_P(ElementwiseKernels, NormsAndRope) {
  for (int64_t n : {2, 16, 64, 128, 896}) {
    const auto x = random_floats(n, 2.0f, 5), w = random_floats(n, 1.0f, 6);
    std::vector<float> out(x.size());
    rms_norm(x.data(), w.data(), out.data(), n, 1e-6f);
    double ss = 0;
    for (float v : x) ss += double(v) * v;
    const double inv = 1 / std::sqrt(ss / static_cast<double>(n) + 1e-6);
    for (size_t i = 0; i < x.size(); ++i) expect_close(out[i], x[i] * inv * w[i], 1e-5, 1e-7, "rms_norm n=" + std::to_string(n));

    const int64_t half = n / 2;
    const int32_t pos[] = {0, 7, 4095};
    std::vector<float> inv_freq(static_cast<size_t>(half)), cos(static_cast<size_t>(3 * half)), sin(cos.size());
    for (int64_t i = 0; i < half; ++i) inv_freq[static_cast<size_t>(i)] = std::pow(10000.0f, -2.0f * i / n);
    rope_tables(pos, 3, inv_freq.data(), n, cos.data(), sin.data());
    for (RopeStyle style : {RopeStyle::Normal, RopeStyle::Neox})
      for (int t = 0; t < 3; ++t) {
        auto r = x;
        rope_apply(r.data(), n, cos.data() + t * half, sin.data() + t * half, style);
        for (int64_t i = 0; i < half; ++i) {
          const double theta = double(static_cast<float>(pos[t]) * inv_freq[static_cast<size_t>(i)]);
          const int64_t a = style == RopeStyle::Neox ? i : 2 * i, b = style == RopeStyle::Neox ? i + half : 2 * i + 1;
          const double x0 = x[static_cast<size_t>(a)], x1 = x[static_cast<size_t>(b)];
          const std::string where = "rope n=" + std::to_string(n) + " pos=" + std::to_string(pos[t]);
          expect_close(r[static_cast<size_t>(a)], x0 * std::cos(theta) - x1 * std::sin(theta), 1e-5, 1e-5, where);
          expect_close(r[static_cast<size_t>(b)], x0 * std::sin(theta) + x1 * std::cos(theta), 1e-5, 1e-5, where);
        }
      }
  }
}

TEST_P(ElementwiseKernels, CachedRowsOfEveryElementType) {
  for (int64_t d : {20, 64, 128}) {
    const int64_t rows = 3, stride = d + 5;
    const auto vals = random_floats(rows * stride, 1.0f, 7), q = random_floats(d, 1.0f, 8);
    std::vector<uint16_t> f16(vals.size()), b16(vals.size());
    std::vector<float> exact16(vals.size()), exactb(vals.size());
    for (size_t i = 0; i < vals.size(); ++i) {
      f16[i] = fp32_to_fp16(vals[i]);
      b16[i] = fp32_to_bf16(vals[i]);
      exact16[i] = fp16_to_fp32(f16[i]);
      exactb[i] = bf16_to_fp32(b16[i]);
    }
    struct Stored {
      KvType type;
      const void* base;
      const std::vector<float>& exact;
    };
    for (const Stored& s : {Stored{KvType::F32, vals.data(), vals}, Stored{KvType::F16, f16.data(), exact16},
                            Stored{KvType::BF16, b16.data(), exactb}})
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<float> row(static_cast<size_t>(d));
        row_to_f32(s.base, r, stride, d, s.type, row.data());
        double dot = 0, absdot = 0;
        for (int64_t i = 0; i < d; ++i) {
          const float want = s.exact[static_cast<size_t>(r * stride + i)];
          EXPECT_EQ(row[static_cast<size_t>(i)], want) << "row_to_f32 d=" << d << " type " << static_cast<int>(s.type);
          dot += double(q[static_cast<size_t>(i)]) * want;
          absdot += std::fabs(double(q[static_cast<size_t>(i)]) * want);
        }
        expect_close(dot_row(q.data(), s.base, r, stride, d, s.type), dot, 0, 1e-6 * absdot + 1e-30,
                     "dot_row d=" + std::to_string(d) + " type " + std::to_string(static_cast<int>(s.type)));
      }
  }
}
