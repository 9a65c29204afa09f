#include <gtest/gtest.h>

#include <cmath>

#include "kvsqueeze/error.h"
#include "kvsqueeze/sampler.h"

using namespace kvsqueeze;

TEST(Sampler, GreedyIsArgmaxWithLowestIndexOnTies) {
  Sampler s({});
  EXPECT_EQ(s.sample({0.1f, 3.0f, -1.0f, 3.0f}), 1);
  EXPECT_EQ(argmax({5.0f, 1.0f}), 0);
}

TEST(Sampler, SeededSamplingIsReproducible) {
  std::vector<float> logits(50);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i));
  SamplerOptions o;
  o.temperature = 1.0f;
  o.top_k = 0;
  o.top_p = 1.0f;
  o.min_p = 0.0f;
  o.seed = 7;
  Sampler a(o), b(o);
  std::vector<int32_t> xs, ys;
  for (int i = 0; i < 100; ++i) {
    xs.push_back(a.sample(logits));
    ys.push_back(b.sample(logits));
  }
  EXPECT_EQ(xs, ys);
  o.seed = 8;
  Sampler c(o);
  std::vector<int32_t> zs;
  for (int i = 0; i < 100; ++i) zs.push_back(c.sample(logits));
  EXPECT_NE(xs, zs);
}

TEST(Sampler, FrequenciesFollowTheTemperedSoftmax) {
  const std::vector<float> logits = {0.0f, std::log(3.0f), -100.0f};
  SamplerOptions o;
  o.temperature = 1.0f;
  o.top_k = 0;
  o.top_p = 1.0f;
  o.min_p = 0.0f;
  Sampler s(o);
  int counts[3] = {0, 0, 0};
  const int n = 20000;
  for (int i = 0; i < n; ++i) counts[s.sample(logits)]++;
  EXPECT_NEAR(counts[1] / static_cast<double>(n), 0.75, 0.015);  // > 6 sigma from 0.75 would fail
  EXPECT_EQ(counts[2], 0);
  o.temperature = 0.5f;  // p ∝ exp(2 logit): 1 : 9
  Sampler cold(o);
  counts[0] = counts[1] = 0;
  for (int i = 0; i < n; ++i) counts[cold.sample(logits)]++;
  EXPECT_NEAR(counts[1] / static_cast<double>(n), 0.9, 0.012);
}

TEST(Sampler, FiltersCutTheTail) {
  const std::vector<float> logits = {2.0f, 1.9f, 0.0f, -1.0f, 1.8f};
  SamplerOptions o;
  o.temperature = 5.0f;  // nearly uniform over what survives the filters
  o.min_p = 0.0f;
  o.top_p = 1.0f;
  o.top_k = 2;
  Sampler topk(o);
  for (int i = 0; i < 500; ++i) {
    const int id = topk.sample(logits);
    EXPECT_TRUE(id == 0 || id == 1) << id;
  }
  o.top_k = 0;
  o.min_p = 0.5f;  // keeps p >= 0.5 p_max: ids 0, 1, 4 (exp(-0.2) = 0.82), drops exp(-2), exp(-3)
  Sampler minp(o);
  for (int i = 0; i < 500; ++i) {
    const int id = minp.sample(logits);
    EXPECT_TRUE(id == 0 || id == 1 || id == 4) << id;
  }
  o.min_p = 0.0f;
  o.top_p = 0.3f;  // the first candidate alone has p > 0.3
  Sampler topp(o);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(topp.sample(logits), 0);
}

TEST(Sampler, RejectsBadOptions) {
  SamplerOptions o;
  o.temperature = -1.0f;
  EXPECT_THROW(Sampler::validate(o), Error);
  o = {};
  o.top_p = 0.0f;
  EXPECT_THROW(Sampler::validate(o), Error);
  o = {};
  o.min_p = 1.0f;
  EXPECT_THROW(Sampler::validate(o), Error);
  o = {};
  o.top_k = -3;
  EXPECT_THROW(Sampler::validate(o), Error);
}
