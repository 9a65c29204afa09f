// KvCache::rewrite_rows: merged or pooled rows overwrite slots in place, in the cache's element
// type, leaving the other slots, the lengths and the held bytes as they were; positions must
// keep each run strictly ascending.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/kv_rows.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/kv_cache.h"

using namespace kvsqueeze;

namespace {

KvCache filled(KvType type, int64_t len) {
  KvCacheShape shape;
  shape.n_layer = 1;
  shape.n_head_kv = 2;
  shape.head_dim_k = 4;
  shape.head_dim_v = 3;
  shape.k_type = shape.v_type = type;
  KvCache cache(shape, len);
  std::vector<float> k(static_cast<size_t>(len * 2 * 4)), v(static_cast<size_t>(len * 2 * 3));
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<float>(i);
  for (size_t i = 0; i < v.size(); ++i) v[i] = -static_cast<float>(i);
  std::vector<int32_t> pos(static_cast<size_t>(len));
  for (int64_t i = 0; i < len; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(10 * i);
  cache.append(0, len, k.data(), v.data(), pos.data());
  return cache;
}

std::vector<float> row(const KvCache& cache, int64_t head, int64_t slot, bool key) {
  const auto r = cache.run(0, head);
  const int64_t d = key ? cache.shape().head_dim_k : cache.shape().head_dim_v;
  std::vector<float> out(static_cast<size_t>(d));
  if (key) kernels::key_row_to_f32(r, slot, d, out.data());
  else kernels::row_to_f32(r.v, slot, r.v_stride, d, r.v_type, out.data());
  return out;
}

}  // namespace

TEST(KvCacheRows, RewritesOnlyTheSpanAndWhatIsGiven) {
  for (KvType type : {KvType::F32, KvType::F16, KvType::BF16}) {
    KvCache cache = filled(type, 6);
    const size_t held = cache.bytes_held();
    const std::vector<float> k_before = row(cache, 1, 1, true), v_untouched = row(cache, 0, 2, false);
    const std::vector<float> values = {0.5f, 1.5f, 2.5f, -4.f, 8.f, 0.25f};  // two rows of 3
    const std::vector<int32_t> pos = {11, 15};
    cache.rewrite_rows(0, 1, 2, 2, nullptr, values.data(), pos.data());
    EXPECT_EQ(row(cache, 1, 2, false), std::vector<float>(values.begin(), values.begin() + 3));
    EXPECT_EQ(row(cache, 1, 3, false), std::vector<float>(values.begin() + 3, values.end()));
    EXPECT_EQ(cache.positions(0, 1)[2], 11);
    EXPECT_EQ(cache.positions(0, 1)[3], 15);
    EXPECT_EQ(cache.positions(0, 1)[4], 40);
    EXPECT_EQ(row(cache, 1, 1, true), k_before);     // keys not given: untouched
    EXPECT_EQ(row(cache, 0, 2, false), v_untouched);  // the other head: untouched
    EXPECT_EQ(cache.length(0, 1), 6);
    EXPECT_EQ(cache.bytes_held(), held);
    const std::vector<float> key = {1, 2, 3, 4};
    cache.rewrite_rows(0, 0, 5, 1, key.data(), nullptr, nullptr);
    EXPECT_EQ(row(cache, 0, 5, true), key);
    EXPECT_EQ(cache.positions(0, 0)[5], 50);
  }
}

TEST(KvCacheRows, RejectsSpansOutsideTheRunAndUnorderedPositions) {
  KvCache cache = filled(KvType::F32, 4);
  const std::vector<float> v(6, 0.f);
  EXPECT_THROW(cache.rewrite_rows(0, 0, 3, 2, nullptr, v.data(), nullptr), Error);
  EXPECT_THROW(cache.rewrite_rows(0, 0, -1, 1, nullptr, v.data(), nullptr), Error);
  const std::vector<int32_t> clash_left = {10}, clash_right = {20}, descending = {15, 12};
  EXPECT_THROW(cache.rewrite_rows(0, 0, 2, 1, nullptr, nullptr, clash_left.data()), Error);   // slot 1 holds 10
  EXPECT_THROW(cache.rewrite_rows(0, 0, 1, 1, nullptr, nullptr, clash_right.data()), Error);  // slot 2 holds 20
  EXPECT_THROW(cache.rewrite_rows(0, 0, 1, 2, nullptr, nullptr, descending.data()), Error);
  EXPECT_EQ(cache.positions(0, 0)[1], 10);  // nothing written by a refused call
}
