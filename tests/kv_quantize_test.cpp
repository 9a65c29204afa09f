// The quantized KV cache's storage: rows quantized bit for bit as gguf-py does (fixtures from
// tests/reference/make_kv_quant_fixtures.py), bytes held equal to the block formula, rotated keys
// read back as the keys given, and the errors for shapes a type cannot hold.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/dequantize.h"
#include "kernels/hadamard.h"
#include "kernels/kv_quantize.h"
#include "kernels/kv_rows.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/kv_cache.h"
#include "quant_fixture.h"

using namespace kvsqueeze;

namespace {

struct QuantCase {
  uint32_t ggml_type;
  std::vector<float> row;
  std::vector<uint8_t> blocks;
};

std::vector<QuantCase> load_cases() {
  quant_fixture::Reader in("kv_quant.bin", "KVQKV001");
  std::vector<QuantCase> cases(in.u32());
  for (auto& c : cases) {
    c.ggml_type = in.u32();
    c.row.resize(in.u32());
    in.read(c.row);
    c.blocks.resize(in.u32());
    in.read(c.blocks);
  }
  in.check();
  return cases;
}

KvCacheShape shape_of(KvType k, KvType v, int64_t dk, int64_t dv, bool rotated = false, bool centered = false) {
  KvCacheShape s;
  s.n_layer = 2;
  s.n_head_kv = 2;
  s.head_dim_k = dk;
  s.head_dim_v = dv;
  s.k_type = k;
  s.v_type = v;
  s.k_rotated = rotated;
  s.v_rotated = rotated;
  s.k_centered = centered;
  return s;
}

using quant_fixture::gaussian;

}  // namespace

TEST(KvQuantize, RowsAreQuantizedBitForBitAsGgufPyDoes) {
  const auto cases = load_cases();
  ASSERT_EQ(cases.size(), 22u);
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    std::vector<uint8_t> got(c.blocks.size(), 0xAB);
    const auto n = static_cast<int64_t>(c.row.size());
    if (c.ggml_type == 8) kernels::quantize_row_q8_0(c.row.data(), got.data(), n);
    else if (c.ggml_type == 2) kernels::quantize_row_q4_0(c.row.data(), got.data(), n);
    else FAIL() << "unexpected type " << c.ggml_type;
    EXPECT_EQ(got, c.blocks) << "case " << i << " type " << c.ggml_type << " n " << n;
  }
}

TEST(KvQuantize, BytesHeldFollowTheBlockLayout) {
  // Per slot and head: Q8_0 34 bytes per 32 elements, Q4_0 18, f16 2 per element, plus a position.
  struct Want {
    KvType k, v;
    size_t slot_bytes;
  };
  for (const Want& w : {Want{KvType::Q8_0, KvType::Q8_0, 64 / 32 * 34 + 128 / 32 * 34 + 4},
                        Want{KvType::Q4_0, KvType::Q4_0, 64 / 32 * 18 + 128 / 32 * 18 + 4},
                        Want{KvType::Q8_0, KvType::F16, 64 / 32 * 34 + 128 * 2 + 4},
                        Want{KvType::F32, KvType::Q4_0, 64 * 4 + 128 / 32 * 18 + 4}}) {
    KvCache cache(shape_of(w.k, w.v, 64, 128), 10);
    EXPECT_EQ(cache.bytes_held(), 2u * 2u * 10u * w.slot_bytes) << kv_types_label(w.k, w.v);
    std::vector<float> k = gaussian(3 * 2 * 64, 1), v = gaussian(3 * 2 * 128, 2);
    const std::vector<int32_t> pos = {0, 1, 2};
    cache.append(0, 3, k.data(), v.data(), pos.data());
    EXPECT_EQ(cache.bytes_used(), 2u * 3u * w.slot_bytes);
    cache.release_slack(0);
    EXPECT_EQ(cache.bytes_held(), 2u * 3u * w.slot_bytes) << "layer 1 holds nothing after releasing its slack";
  }
}

TEST(KvQuantize, StoredRowsReadBackAsTheirQuantizedValues) {
  for (bool rotated : {false, true})
    for (KvType type : {KvType::Q8_0, KvType::Q4_0}) {
      SCOPED_TRACE(std::string(kv_type_name(type)) + (rotated ? " rotated" : ""));
      KvCache cache(shape_of(type, type, 64, 64, rotated), 4);
      const std::vector<float> k = gaussian(4 * 2 * 64, 3, 2.0f), v = gaussian(4 * 2 * 64, 4);
      const std::vector<int32_t> pos = {0, 5, 6, 9};
      cache.append(1, 4, k.data(), v.data(), pos.data());
      for (int64_t h = 0; h < 2; ++h) {
        const KvRun run = cache.run(1, h);
        EXPECT_EQ(run.k_rotated, rotated);
        EXPECT_EQ(run.v_rotated, rotated);
        for (int64_t slot = 0; slot < 4; ++slot) {
          // What the row should hold: the key (rotated when the cache rotates) quantized once.
          std::vector<float> key(k.begin() + (slot * 2 + h) * 64, k.begin() + (slot * 2 + h + 1) * 64), want(64), got(64);
          if (rotated) kernels::hadamard_rotate(key.data(), 64);
          std::vector<uint8_t> blocks(kv_row_bytes(type, 64));
          if (type == KvType::Q8_0) kernels::quantize_row_q8_0(key.data(), blocks.data(), 64);
          else kernels::quantize_row_q4_0(key.data(), blocks.data(), 64);
          EXPECT_EQ(std::memcmp(blocks.data(), run.k_row(slot), blocks.size()), 0) << "slot " << slot;
          kernels::dequantize_row(type == KvType::Q8_0 ? TensorType::Q8_0 : TensorType::Q4_0, blocks.data(), want.data(), 64);
          if (rotated) kernels::hadamard_rotate(want.data(), 64);
          kernels::key_row_to_f32(run, slot, 64, got.data());  // readers see keys un-rotated
          for (int i = 0; i < 64; ++i) EXPECT_NEAR(got[static_cast<size_t>(i)], want[static_cast<size_t>(i)], 1e-5f) << i;
          // and close to the keys given: the quantization step of the row's blocks
          const float* orig = k.data() + (slot * 2 + h) * 64;
          float amax = 0;
          for (int i = 0; i < 64; ++i) amax = std::max(amax, std::fabs(key[static_cast<size_t>(i)]));
          const float step = type == KvType::Q8_0 ? amax / 127 : amax / 8;
          for (int i = 0; i < 64; ++i) EXPECT_NEAR(got[static_cast<size_t>(i)], orig[i], (rotated ? 8.0f : 1.0f) * step) << i;
        }
      }
    }
}

TEST(KvQuantize, HadamardRotationIsItsOwnInverse) {
  for (int64_t d : {32, 64, 96, 128, 256}) {
    const std::vector<float> x = gaussian(static_cast<size_t>(d), 7);
    std::vector<float> y = x;
    kernels::hadamard_rotate(y.data(), d);
    double nx = 0, ny = 0;
    for (int64_t i = 0; i < d; ++i) nx += x[static_cast<size_t>(i)] * x[static_cast<size_t>(i)], ny += y[static_cast<size_t>(i)] * y[static_cast<size_t>(i)];
    EXPECT_NEAR(nx, ny, 1e-4 * nx) << "orthogonal: the norm is kept, d " << d;
    kernels::hadamard_rotate(y.data(), d);
    for (int64_t i = 0; i < d; ++i) EXPECT_NEAR(y[static_cast<size_t>(i)], x[static_cast<size_t>(i)], 1e-5f) << "d " << d;
  }
  // One outlier spreads evenly over its block.
  std::vector<float> spike(64, 0.0f);
  spike[5] = 8.0f;
  kernels::hadamard_rotate(spike.data(), 64);
  for (float v : spike) EXPECT_NEAR(std::fabs(v), 1.0f, 1e-6f);
}

TEST(KvQuantize, ShapesATypeCannotHoldAreRefused) {
  try {
    KvCache cache(shape_of(KvType::Q8_0, KvType::F16, 48, 64), 1);
    FAIL() << "48 key channels are not whole Q8_0 blocks";
  } catch (const ParameterError& e) {
    EXPECT_EQ(e.parameter(), "kv_type_k");
    EXPECT_NE(std::string(e.what()).find("blocks of 32"), std::string::npos) << e.what();
  }
  EXPECT_THROW(KvCache(shape_of(KvType::F16, KvType::Q4_0, 64, 8), 1), ParameterError);
  // Key-channel pruning (ThinK) keeps whole blocks of a quantized key cache, or is refused.
  KvCache cache(shape_of(KvType::Q8_0, KvType::Q8_0, 64, 64, true), 2);
  const std::vector<float> k = gaussian(2 * 2 * 64, 8), v = gaussian(2 * 2 * 64, 9);
  const std::vector<int32_t> pos = {0, 1};
  cache.append(0, 2, k.data(), v.data(), pos.data());
  std::vector<int32_t> odd(40);
  for (int i = 0; i < 40; ++i) odd[static_cast<size_t>(i)] = i;
  EXPECT_THROW(cache.keep_key_channels(0, 0, odd), ParameterError);
  std::vector<int32_t> half(32);
  for (int i = 0; i < 32; ++i) half[static_cast<size_t>(i)] = 2 * i;
  cache.keep_key_channels(0, 0, half);
  const KvRun run = cache.run(0, 0);
  EXPECT_FALSE(run.k_rotated) << "a pruned run is stored unrotated";
  EXPECT_EQ(cache.k_row_bytes(0, 0), 34u);
  std::vector<float> got(64);
  kernels::key_row_to_f32(run, 1, 64, got.data());
  for (int i = 0; i < 64; ++i) {
    const float orig = k[static_cast<size_t>(2 * 64 + i)];  // slot 1, head 0
    if (i % 2) EXPECT_EQ(got[static_cast<size_t>(i)], 0.0f);
    else EXPECT_NEAR(got[static_cast<size_t>(i)], orig, 0.1f) << i;  // quantized twice (rotated, then pruned)
  }
}

TEST(KvQuantize, TypeNamesAndErrors) {
  EXPECT_EQ(parse_kv_type("q8_0"), KvType::Q8_0);
  EXPECT_EQ(parse_kv_type("q4_0"), KvType::Q4_0);
  try {
    parse_kv_type("q5_1", "kv_type_v");
    FAIL();
  } catch (const ParameterError& e) {
    EXPECT_EQ(e.parameter(), "kv_type_v");
    EXPECT_NE(std::string(e.what()).find("got 'q5_1'"), std::string::npos);
  }
  EXPECT_EQ(kv_types_label(KvType::Q8_0, KvType::F16), "q8_0/f16");
  EXPECT_EQ(kv_types_label(KvType::Q4_0, KvType::Q4_0), "q4_0");
  EXPECT_TRUE(kv_rows_rotated(KvTransform::Auto, KvType::Q4_0));
  EXPECT_TRUE(kv_rows_rotated(KvTransform::Auto, KvType::Q8_0));
  EXPECT_FALSE(kv_rows_rotated(KvTransform::Auto, KvType::F16));
  EXPECT_FALSE(kv_rows_rotated(KvTransform::Off, KvType::Q4_0));
  EXPECT_TRUE(kv_rows_rotated(KvTransform::On, KvType::F16));
  EXPECT_FALSE(kv_keys_rotated(KvTransform::Auto, KvType::KIVI2)) << "KIVI2 keys: per channel, not rotated by default";
  EXPECT_TRUE(kv_rows_rotated(KvTransform::Auto, KvType::KIVI2)) << "KIVI2 values are";
  EXPECT_TRUE(kv_keys_rotated(KvTransform::On, KvType::KIVI2));
  EXPECT_TRUE(kv_keys_rotated(KvTransform::Auto, KvType::Q4_0));
  EXPECT_THROW(parse_kv_transform("yes", "kv_rotation"), ParameterError);
}

// Keys like Qwen2.5's: a few channels carry a large constant (the key bias) on top of the signal.
std::vector<float> biased_keys(int64_t n, int64_t heads, int64_t d, uint32_t seed) {
  std::vector<float> k = gaussian(static_cast<size_t>(n * heads * d), seed);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      k[static_cast<size_t>((t * heads + h) * d + 3)] += 120.0f;
      k[static_cast<size_t>((t * heads + h) * d + 40)] -= 60.0f;
    }
  return k;
}

TEST(KvQuantize, CentredKeysReadBackAndLeaveAttentionUnchanged) {
  const int64_t n = 40, d = 64;
  const std::vector<float> k = biased_keys(n, 2, d, 11), v = gaussian(static_cast<size_t>(n * 2 * d), 12);
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  KvCache plain(shape_of(KvType::F32, KvType::F32, d, d), n), centred(shape_of(KvType::F32, KvType::F32, d, d, false, true), n);
  plain.append(0, n, k.data(), v.data(), pos.data());
  centred.append(0, n, k.data(), v.data(), pos.data());
  ASSERT_EQ(centred.key_offset(0, 1).size(), static_cast<size_t>(d));
  EXPECT_TRUE(plain.key_offset(0, 1).empty());
  EXPECT_NEAR(centred.key_offset(0, 1)[3], 120.0f, 1.0f) << "the offset is the mean of the first keys";
  // Readers see the keys given (up to the rounding of key - offset + offset).
  std::vector<float> got(static_cast<size_t>(d));
  for (int64_t slot : {0, 17, 39}) {
    kernels::key_row_to_f32(centred.run(0, 1), slot, d, got.data());
    for (int64_t i = 0; i < d; ++i) EXPECT_NEAR(got[static_cast<size_t>(i)], k[static_cast<size_t>((slot * 2 + 1) * d + i)], 2e-5f);
  }
  // Attention over the centred runs equals attention over the plain ones: q.offset is added to
  // every score of a query alike, and softmax ignores it.
  const AttentionShape shape{4, 2, d, d, 0.125f, 0};
  const std::vector<float> q = gaussian(static_cast<size_t>(3 * 4 * d), 13, 0.3f);
  const std::vector<int32_t> q_pos = {n - 3, n - 2, n - 1};
  std::vector<float> out_plain(static_cast<size_t>(3 * 4 * d)), out_centred(out_plain.size());
  const KvRun runs_plain[2] = {plain.run(0, 0), plain.run(0, 1)}, runs_centred[2] = {centred.run(0, 0), centred.run(0, 1)};
  kernels::attention(shape, q.data(), q_pos.data(), 3, runs_plain, out_plain.data(), nullptr);
  kernels::attention(shape, q.data(), q_pos.data(), 3, runs_centred, out_centred.data(), nullptr);
  for (size_t i = 0; i < out_plain.size(); ++i) EXPECT_NEAR(out_centred[i], out_plain[i], 1e-4f * (1 + std::fabs(out_plain[i]))) << i;
}

TEST(KvQuantize, CentringAndRotationShrinkTheErrorOfQuantizedBiasedKeys) {
  // The point of both transforms, measured: mean |error| of q8_0/q4_0 keys read back.
  const int64_t n = 64, d = 64;
  const std::vector<float> k = biased_keys(n, 2, d, 21), v = gaussian(static_cast<size_t>(n * 2 * d), 22);
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  for (KvType type : {KvType::Q8_0, KvType::Q4_0}) {
    double err[4] = {0, 0, 0, 0};
    for (int mode = 0; mode < 4; ++mode) {  // plain, rotated, centred, both
      KvCache cache(shape_of(type, type, d, d, mode & 1, mode & 2), n);
      cache.append(0, n, k.data(), v.data(), pos.data());
      std::vector<float> got(static_cast<size_t>(d));
      for (int64_t t = 0; t < n; ++t)
        for (int64_t h = 0; h < 2; ++h) {
          kernels::key_row_to_f32(cache.run(0, h), t, d, got.data());
          for (int64_t i = 0; i < d; ++i) err[mode] += std::fabs(got[static_cast<size_t>(i)] - k[static_cast<size_t>((t * 2 + h) * d + i)]);
        }
    }
    SCOPED_TRACE(kv_type_name(type));
    EXPECT_LT(err[2], 0.25 * err[0]) << "centring removes the constant channels' share of the range";
    EXPECT_LT(err[3], 0.25 * err[0]);
    std::printf("[ %s ] mean |key error|: plain %.4f rotated %.4f centred %.4f both %.4f\n", kv_type_name(type),
                err[0] / (n * 2 * d), err[1] / (n * 2 * d), err[2] / (n * 2 * d), err[3] / (n * 2 * d));
  }
}
