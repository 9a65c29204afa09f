// KIVI 2-bit KV cache: quantization bit for bit as the numpy reference of KIVI's formulas writes it
// (tests/reference/make_kivi_fixtures.py), groups of 32 slots filled from the f16 recent window,
// compaction and rollback re-forming the groups, bytes held equal to the layout's formula, and
// attention over KIVI runs equal to attention over the values they decode to.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/fp16.h"
#include "kernels/hadamard.h"
#include "kernels/kivi_quantize.h"
#include "kernels/kv_rows.h"
#include "kvsqueeze/kv_cache.h"
#include "quant_fixture.h"

using namespace kvsqueeze;

namespace {

struct KiviCase {
  uint32_t kind, d, rows;
  std::vector<float> input, dequantized;
  std::vector<uint8_t> bytes;
};

std::vector<KiviCase> load_cases() {
  quant_fixture::Reader in("kivi2.bin", "KVQKIVI1");
  std::vector<KiviCase> cases(in.u32());
  for (auto& c : cases) {
    c.kind = in.u32();
    c.d = in.u32();
    c.rows = in.u32();
    c.input.resize(static_cast<size_t>(c.d) * c.rows);
    in.read(c.input);
    c.bytes.resize(in.u32());
    in.read(c.bytes);
    c.dequantized.resize(c.input.size());
    in.read(c.dequantized);
  }
  in.check();
  return cases;
}

constexpr int64_t kD = 64;

KvCacheShape kivi_shape(bool rotated, KvType v_type = KvType::KIVI2) {
  KvCacheShape s;
  s.n_layer = 2;
  s.n_head_kv = 2;
  s.head_dim_k = kD;
  s.head_dim_v = kD;
  s.k_type = KvType::KIVI2;
  s.v_type = v_type;
  s.k_rotated = rotated;
  s.v_rotated = rotated;
  return s;
}

using quant_fixture::gaussian;

std::vector<float> f16_rounded(const float* x, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = kernels::fp16_to_fp32(kernels::fp32_to_fp16(x[i]));
  return out;
}

// What a cache holds for `rows` (n x d, in slot order, already as stored): full groups of 32
// quantized (keys per channel or values per token), the rest f16.
std::vector<float> expected_rows(const std::vector<float>& rows, int64_t n, bool keys) {
  std::vector<float> out(rows.size());
  const int64_t full = n / kKiviGroup * kKiviGroup;
  for (int64_t g = 0; g < full; g += kKiviGroup) {
    std::vector<float> group = f16_rounded(rows.data() + g * kD, kKiviGroup * kD);  // they waited in the window
    if (keys) {
      std::vector<uint8_t> params(kivi_group_bytes(kD)), codes(kKiviGroup * kD / 4);
      kernels::quantize_group_kivi2(group.data(), kD, params.data(), codes.data(), kD / 4);
      for (int64_t t = 0; t < kKiviGroup; ++t) kernels::dequantize_key_kivi2(params.data(), codes.data() + t * kD / 4, out.data() + (g + t) * kD, kD);
    } else {
      std::vector<uint8_t> row(kv_row_bytes(KvType::KIVI2, kD));
      for (int64_t t = 0; t < kKiviGroup; ++t) {
        kernels::quantize_row_kivi2(group.data() + t * kD, row.data(), kD);
        kernels::dequantize_row_kivi2(row.data(), out.data() + (g + t) * kD, kD);
      }
    }
  }
  const std::vector<float> tail = f16_rounded(rows.data() + full * kD, (n - full) * kD);
  std::copy(tail.begin(), tail.end(), out.begin() + full * kD);
  return out;
}

// A run's rows as stored (rotation not undone), n x kD.
std::vector<float> stored(const KvRun& run, bool keys) {
  std::vector<float> out(static_cast<size_t>(run.len * kD));
  for (int64_t j = 0; j < run.len; ++j) {
    if (keys) kernels::stored_key_row(run, j, out.data() + j * kD);
    else kernels::stored_value_row(run, j, out.data() + j * kD);
  }
  return out;
}

// Bytes one run of `cap` slots holds: codes and value rows and positions per slot, the
// parameters of every full group of keys, a recent window of `window` f16 key and value rows.
size_t run_bytes(int64_t cap, int64_t window, KvType v_type) {
  const size_t per_slot = kD / 4 + kv_row_bytes(v_type, kD) + 4;
  return static_cast<size_t>(cap) * per_slot + static_cast<size_t>(cap / 32) * 4 * kD + static_cast<size_t>(window) * 2 * kD * 2;
}

// Appends n tokens to layer 0 in chunks of `chunk`; returns the keys and values given.
void fill(KvCache& cache, int64_t n, int64_t chunk, std::vector<float>& k, std::vector<float>& v) {
  k = gaussian(static_cast<size_t>(n * 2 * kD), 11, 2.0f);
  v = gaussian(static_cast<size_t>(n * 2 * kD), 12);
  for (int64_t t0 = 0; t0 < n; t0 += chunk) {
    const int64_t m = std::min(chunk, n - t0);
    std::vector<int32_t> pos(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(t0 + i);
    cache.append(0, m, k.data() + t0 * 2 * kD, v.data() + t0 * 2 * kD, pos.data());
  }
}

// Head h's rows of n tokens given as n x (2 heads x kD), rotated when the cache rotates.
std::vector<float> head_rows(const std::vector<float>& x, int64_t n, int64_t h, bool rotated) {
  std::vector<float> out(static_cast<size_t>(n * kD));
  for (int64_t t = 0; t < n; ++t) {
    std::copy_n(x.begin() + (t * 2 + h) * kD, kD, out.begin() + t * kD);
    if (rotated) kernels::hadamard_rotate(out.data() + t * kD, kD);
  }
  return out;
}

void expect_rows(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << what << " element " << i << " (slot " << i / kD << ")";
}

}  // namespace

TEST(KiviQuantize, MatchesTheNumpyReferenceBitForBit) {
  const auto cases = load_cases();
  ASSERT_EQ(cases.size(), 10u);
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    SCOPED_TRACE("case " + std::to_string(i) + (c.kind == 0 ? " value row" : " key group") + " d " + std::to_string(c.d));
    const auto d = static_cast<int64_t>(c.d);
    std::vector<uint8_t> got(c.bytes.size(), 0xAB);
    std::vector<float> back(c.input.size());
    if (c.kind == 0) {
      ASSERT_EQ(got.size(), kv_row_bytes(KvType::KIVI2, d));
      kernels::quantize_row_kivi2(c.input.data(), got.data(), d);
      kernels::dequantize_row_kivi2(got.data(), back.data(), d);
    } else {
      ASSERT_EQ(c.rows, 32u);
      ASSERT_EQ(got.size(), kivi_group_bytes(d) + 32 * kv_key_row_bytes(KvType::KIVI2, d));
      uint8_t* codes = got.data() + kivi_group_bytes(d);
      kernels::quantize_group_kivi2(c.input.data(), d, got.data(), codes, d / 4);
      for (int64_t t = 0; t < 32; ++t) kernels::dequantize_key_kivi2(got.data(), codes + t * d / 4, back.data() + t * d, d);
    }
    EXPECT_EQ(got, c.bytes);
    EXPECT_EQ(back, c.dequantized);
  }
}

TEST(KiviCache, GroupsFillFromTheRecentWindowAndHoldTheirFormula) {
  for (bool rotated : {false, true})
    for (KvType v_type : {KvType::KIVI2, KvType::Q8_0}) {
      SCOPED_TRACE(std::string(rotated ? "rotated " : "") + "values " + kv_type_name(v_type));
      KvCache cache(kivi_shape(rotated, v_type), 100);
      EXPECT_EQ(cache.bytes_held(), 4 * run_bytes(100, 32, v_type)) << "empty runs: a full window";
      std::vector<float> k, v;
      fill(cache, 75, 20, k, v);
      for (int64_t h = 0; h < 2; ++h) {
        const KvRun run = cache.run(0, h);
        ASSERT_EQ(run.len, 75);
        EXPECT_EQ(run.recent_first, 64) << "two full groups, 11 slots waiting";
        expect_rows(stored(run, true), expected_rows(head_rows(k, 75, h, rotated), 75, true), "keys");
        if (v_type == KvType::KIVI2) expect_rows(stored(run, false), expected_rows(head_rows(v, 75, h, rotated), 75, false), "values");
        // Readers see the keys given (rotated back), within KIVI's step: a quarter of a
        // channel's range over its group of 32.
        std::vector<float> key(kD);
        for (int64_t slot : {0, 40, 70}) {
          kernels::key_row_to_f32(run, slot, kD, key.data());
          for (int64_t i = 0; i < kD; ++i) EXPECT_NEAR(key[static_cast<size_t>(i)], k[static_cast<size_t>((slot * 2 + h) * kD + i)], rotated ? 6.0 : 2.0);
        }
      }
      cache.release_slack(0);
      EXPECT_EQ(cache.bytes_held(), 2 * run_bytes(75, 11, v_type)) << "the 11 slots waiting; layer 1 holds nothing";
      EXPECT_EQ(cache.bytes_used(), cache.bytes_held());
    }
}

TEST(KiviCache, CompactionAndRollbackReformTheGroups) {
  KvCache cache(kivi_shape(false), 100);
  std::vector<float> k, v;
  fill(cache, 90, 90, k, v);
  const KvRun before = cache.run(0, 1);
  const std::vector<float> keys = stored(before, true), values = stored(before, false);
  std::vector<int32_t> keep;
  for (int32_t s = 0; s < 90; s += 2) keep.push_back(s);  // 45 slots: one group and 13 waiting
  cache.compact(0, 1, keep);
  const KvRun after = cache.run(0, 1);
  ASSERT_EQ(after.len, 45);
  EXPECT_EQ(after.recent_first, 32);
  std::vector<float> kept_k, kept_v;
  for (int32_t s : keep) {
    kept_k.insert(kept_k.end(), keys.begin() + s * kD, keys.begin() + (s + 1) * kD);
    kept_v.insert(kept_v.end(), values.begin() + s * kD, values.begin() + (s + 1) * kD);
  }
  // The kept slots, as they read before, quantized again in their new groups.
  expect_rows(stored(after, true), expected_rows(kept_k, 45, true), "keys after compaction");
  expect_rows(stored(after, false), expected_rows(kept_v, 45, false), "values after compaction");
  for (int64_t j = 0; j < 45; ++j) EXPECT_EQ(after.pos[j], keep[static_cast<size_t>(j)]);

  // Rolling back into the quantized slots of head 0: its last group goes back to the window.
  const std::vector<float> head0 = stored(cache.run(0, 0), true);
  cache.truncate_from_position(40);
  const KvRun rolled = cache.run(0, 0);
  ASSERT_EQ(rolled.len, 40);
  EXPECT_EQ(rolled.recent_first, 32);
  expect_rows(stored(rolled, true), expected_rows({head0.begin(), head0.begin() + 40 * kD}, 40, true), "keys after rollback");
}

TEST(KiviCache, AttentionEqualsAttentionOverTheDecodedRows) {
  for (bool rotated : {false, true}) {
    SCOPED_TRACE(rotated ? "rotated" : "plain");
    KvCache cache(kivi_shape(rotated), 200);
    std::vector<float> k, v;
    fill(cache, 150, 64, k, v);
    std::vector<int32_t> keep;
    for (int32_t s = 0; s < 150; ++s)
      if (s % 3 != 1) keep.push_back(s);
    cache.compact(0, 0, keep);  // ragged: head 0 keeps 100, head 1 all 150
    // The same rows, decoded (rotation undone), as plain f32 runs.
    std::vector<std::vector<float>> dk(2), dv(2);
    KvRun runs[2], plain[2];
    for (int64_t h = 0; h < 2; ++h) {
      runs[h] = cache.run(0, h);
      dk[h].resize(static_cast<size_t>(runs[h].len * kD));
      dv[h].resize(dk[h].size());
      for (int64_t j = 0; j < runs[h].len; ++j) {
        kernels::key_row_to_f32(runs[h], j, kD, dk[h].data() + j * kD);
        kernels::stored_value_row(runs[h], j, dv[h].data() + j * kD);
        if (rotated) kernels::hadamard_rotate(dv[h].data() + j * kD, kD);
      }
      plain[h] = runs[h];
      plain[h].k = dk[h].data();
      plain[h].v = dv[h].data();
      plain[h].k_type = plain[h].v_type = KvType::F32;
      plain[h].k_rotated = plain[h].v_rotated = false;
      plain[h].k_groups = nullptr;
      plain[h].recent_first = std::numeric_limits<int64_t>::max();
    }
    const AttentionShape shape{4, 2, kD, kD, 0.125f, 0};
    for (int64_t n_q : {1, 9}) {  // the decode path and the block path
      std::vector<float> q = gaussian(static_cast<size_t>(n_q * 4 * kD), 13), a(static_cast<size_t>(n_q * 4 * kD)), b(a.size());
      std::vector<int32_t> q_pos(static_cast<size_t>(n_q));
      for (int64_t t = 0; t < n_q; ++t) q_pos[static_cast<size_t>(t)] = static_cast<int32_t>(140 + t);
      kernels::attention(shape, q.data(), q_pos.data(), n_q, runs, a.data(), nullptr);
      kernels::attention(shape, q.data(), q_pos.data(), n_q, plain, b.data(), nullptr);
      for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 2e-5f) << "n_q " << n_q << " element " << i;
    }
  }
}
