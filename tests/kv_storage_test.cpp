// backend::KvStorage on the CPU: the memory operations KvCache delegates (capacity, append,
// compaction, dropping a prefix, channel pruning, raw assignment, cloning) keep each run's rows
// and positions together, and bytes held are exactly capacity x row bytes.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <utility>
#include <vector>

#include "backend/kv_storage.h"

using namespace kvsqueeze;
using backend::KvStorage;

namespace {

constexpr int64_t kHeads = 2, kDk = 4, kDv = 3;

KvCacheShape shape_of(KvType type) {
  KvCacheShape s;
  s.n_layer = 2;
  s.n_head_kv = kHeads;
  s.head_dim_k = kDk;
  s.head_dim_v = kDv;
  s.k_type = s.v_type = type;
  return s;
}

// Key channel c of head h at position p is 1000 h + 10 p + c; values are their negatives.
float key_of(int64_t h, int32_t p, int64_t c) { return static_cast<float>(1000 * h + 10 * p + c); }

void append_positions(KvStorage& s, int64_t layer, const std::vector<int32_t>& pos) {
  const auto n = static_cast<int64_t>(pos.size());
  std::vector<float> k(static_cast<size_t>(n * kHeads * kDk)), v(static_cast<size_t>(n * kHeads * kDv));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < kHeads; ++h) {
      for (int64_t c = 0; c < kDk; ++c) k[static_cast<size_t>((t * kHeads + h) * kDk + c)] = key_of(h, pos[static_cast<size_t>(t)], c);
      for (int64_t c = 0; c < kDv; ++c) v[static_cast<size_t>((t * kHeads + h) * kDv + c)] = -key_of(h, pos[static_cast<size_t>(t)], c);
    }
  s.append(layer, n, k.data(), v.data(), pos.data());
}

// The stored key row of a slot (F32 storage), its run's channels only.
std::vector<float> key_row(const KvStorage& s, int64_t layer, int64_t head, int64_t slot) {
  const KvRun r = s.host_run(layer, head);
  const auto* k = static_cast<const float*>(r.k) + slot * r.k_stride;
  return {k, k + r.k_stride};
}

std::vector<int32_t> positions(const KvStorage& s, int64_t layer, int64_t head) {
  const auto p = s.positions(layer, head);
  return {p.begin(), p.end()};
}

size_t row_bytes(const KvStorage& s, int64_t layer, int64_t head) { return s.k_row_bytes(layer, head) + s.v_row_bytes() + sizeof(int32_t); }

size_t expected_held(const KvStorage& s) {
  size_t total = 0;
  for (int64_t l = 0; l < s.shape().n_layer; ++l)
    for (int64_t h = 0; h < kHeads; ++h) total += static_cast<size_t>(s.capacity(l, h)) * row_bytes(s, l, h);
  return total;
}

void reserve_all(KvStorage& s, int64_t cap) {
  for (int64_t l = 0; l < s.shape().n_layer; ++l)
    for (int64_t h = 0; h < kHeads; ++h) s.set_capacity(l, h, cap);
}

}  // namespace

TEST(KvStorage, AppendsIntoCapacityAndHoldsWhatItAllocated) {
  for (KvType type : {KvType::F32, KvType::F16, KvType::BF16}) {
    auto s = backend::make_kv_storage(Device::Cpu, shape_of(type));
    EXPECT_EQ(s->device(), Device::Cpu);
    EXPECT_EQ(s->bytes_held(), 0u);
    reserve_all(*s, 8);
    const size_t elem = type == KvType::F32 ? 4 : 2;
    EXPECT_EQ(s->bytes_held(), 2u * kHeads * 8 * (kDk + kDv) * elem + 2u * kHeads * 8 * sizeof(int32_t));
    EXPECT_EQ(s->bytes_held(), expected_held(*s));
    append_positions(*s, 0, {0, 1, 2, 3, 4});
    EXPECT_EQ(s->length(0, 1), 5);
    EXPECT_EQ(s->length(1, 1), 0);
    EXPECT_EQ(s->capacity(0, 1), 8);
    EXPECT_EQ(s->bytes_used(), 5u * kHeads * row_bytes(*s, 0, 0));
    EXPECT_EQ(positions(*s, 0, 1), (std::vector<int32_t>{0, 1, 2, 3, 4}));
    const KvRun r = s->host_run(0, 1);
    EXPECT_EQ(r.len, 5);
    EXPECT_EQ(r.k_stride, kDk);
    EXPECT_EQ(r.v_stride, kDv);
    EXPECT_EQ(r.k_channels, nullptr);
  }
}

TEST(KvStorage, CompactsDropsAndTruncatesInPlace) {
  auto s = backend::make_kv_storage(Device::Cpu, shape_of(KvType::F32));
  reserve_all(*s, 10);
  append_positions(*s, 0, {0, 1, 2, 3, 4, 5, 6, 7});
  const size_t held = s->bytes_held();
  const std::vector<int32_t> keep{1, 4, 5, 7};
  s->compact(0, 1, keep);
  EXPECT_EQ(positions(*s, 0, 1), (std::vector<int32_t>{1, 4, 5, 7}));
  EXPECT_EQ(positions(*s, 0, 0).size(), 8u);  // the other head is untouched
  EXPECT_EQ(key_row(*s, 0, 1, 2), (std::vector<float>{key_of(1, 5, 0), key_of(1, 5, 1), key_of(1, 5, 2), key_of(1, 5, 3)}));
  EXPECT_EQ(s->capacity(0, 1), 10);
  EXPECT_EQ(s->bytes_held(), held);  // compaction keeps the memory; releasing slack frees it

  s->drop_front(0, 1, 2);  // sliding-window trimming
  EXPECT_EQ(positions(*s, 0, 1), (std::vector<int32_t>{5, 7}));
  EXPECT_EQ(key_row(*s, 0, 1, 1)[3], key_of(1, 7, 3));
  const KvRun r = s->host_run(0, 1);
  EXPECT_EQ(static_cast<const float*>(r.v)[0], -key_of(1, 5, 0));

  s->truncate(0, 0, 3);
  EXPECT_EQ(positions(*s, 0, 0), (std::vector<int32_t>{0, 1, 2}));
  s->set_capacity(0, 0, 3);
  EXPECT_EQ(s->capacity(0, 0), 3);
  EXPECT_EQ(positions(*s, 0, 0), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(s->bytes_held(), expected_held(*s));
  EXPECT_LT(s->bytes_held(), held);
}

TEST(KvStorage, RewritesRowsAndPrunesKeyChannels) {
  auto s = backend::make_kv_storage(Device::Cpu, shape_of(KvType::F32));
  reserve_all(*s, 4);
  append_positions(*s, 1, {3, 6, 9});
  const std::vector<float> k(kDk, 0.5f), v(kDv, 0.25f);
  const int32_t p = 7;
  s->rewrite_rows(1, 0, 1, 1, k.data(), v.data(), &p);
  EXPECT_EQ(positions(*s, 1, 0), (std::vector<int32_t>{3, 7, 9}));
  EXPECT_EQ(key_row(*s, 1, 0, 1), k);
  EXPECT_EQ(key_row(*s, 1, 0, 2)[0], key_of(0, 9, 0));

  const size_t held = s->bytes_held();
  const std::vector<int32_t> channels{1, 3};
  s->keep_key_channels(1, 1, channels);
  EXPECT_EQ(s->k_row_bytes(1, 1), 2 * sizeof(float));
  EXPECT_EQ(held - s->bytes_held(), 4u * 2 * sizeof(float));  // capacity 4, two channels fewer
  EXPECT_EQ(key_row(*s, 1, 1, 2), (std::vector<float>{key_of(1, 9, 1), key_of(1, 9, 3)}));
  ASSERT_NE(s->host_run(1, 1).k_channels, nullptr);
  append_positions(*s, 1, {12});  // later keys store only the kept channels
  EXPECT_EQ(key_row(*s, 1, 1, 3), (std::vector<float>{key_of(1, 12, 1), key_of(1, 12, 3)}));
  EXPECT_EQ(s->bytes_held(), expected_held(*s));
}

TEST(KvStorage, ClonesWithoutSlackAndAssignsRawRows) {
  auto s = backend::make_kv_storage(Device::Cpu, shape_of(KvType::F16));
  reserve_all(*s, 16);
  append_positions(*s, 0, {0, 1, 2, 3});
  append_positions(*s, 1, {0, 1, 2, 3});
  const std::vector<int32_t> channels{0, 2, 3};
  s->keep_key_channels(1, 0, channels);
  const std::vector<int32_t> keep{0, 3};
  s->compact(0, 1, keep);

  auto copy = s->clone();
  EXPECT_EQ(copy->device(), Device::Cpu);
  EXPECT_EQ(copy->bytes_held(), s->bytes_used());  // no slack
  EXPECT_EQ(copy->bytes_held(), copy->bytes_used());
  for (int64_t l = 0; l < 2; ++l)
    for (int64_t h = 0; h < kHeads; ++h) {
      EXPECT_EQ(copy->capacity(l, h), s->length(l, h));
      EXPECT_EQ(positions(*copy, l, h), positions(*s, l, h));
      const auto a = s->key_channels(l, h), b = copy->key_channels(l, h);
      EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end()));
      const KvRun ra = s->host_run(l, h), rb = copy->host_run(l, h);
      EXPECT_EQ(std::memcmp(ra.k, rb.k, static_cast<size_t>(ra.len) * s->k_row_bytes(l, h)), 0);
      EXPECT_EQ(std::memcmp(ra.v, rb.v, static_cast<size_t>(ra.len) * s->v_row_bytes()), 0);
    }
  s->truncate(0, 0, 0);  // the copy is its own memory
  EXPECT_EQ(copy->length(0, 0), 4);

  auto empty = copy->empty_like();
  EXPECT_EQ(empty->bytes_held(), 0u);
  EXPECT_EQ(empty->length(1, 0), 0);
  const KvRun from = copy->host_run(1, 0);
  empty->assign(1, 0, from);
  EXPECT_EQ(empty->length(1, 0), 4);
  EXPECT_EQ(empty->capacity(1, 0), 4);
  EXPECT_EQ(empty->k_row_bytes(1, 0), 3 * sizeof(uint16_t));
  EXPECT_EQ(std::memcmp(empty->host_run(1, 0).k, from.k, 4 * 3 * sizeof(uint16_t)), 0);
  EXPECT_EQ(empty->bytes_held(), expected_held(*empty));
}

TEST(KvStorage, CacheDelegatesToItsStorage) {
  KvCache cache(backend::make_kv_storage(Device::Cpu, shape_of(KvType::F32)));
  EXPECT_EQ(cache.bytes_held(), 0u);
  cache.reserve(6);
  EXPECT_EQ(cache.storage().capacity(1, 1), 6);
  append_positions(cache.storage(), 0, {2, 4});  // the backend's append path
  EXPECT_EQ(cache.length(0, 1), 2);
  EXPECT_EQ(cache.run(0, 1).k, cache.storage().host_run(0, 1).k);  // CPU reads lend the memory
  const std::vector<int32_t> channels{0, 1};
  cache.keep_key_channels(0, 0, channels);
  const KvCache copy = clone_cache(cache);  // pruned channels survive the copy
  EXPECT_EQ(copy.key_channels(0, 0).size(), 2u);
  EXPECT_EQ(copy.bytes_held(), cache.bytes_used());
}

// Rows lent with an owner (the Python package's zero-copy views) stay as they were while the
// storage compacts, drops, truncates and re-appends, rewrites, prunes channels and assigns, and
// after the storage is gone; the storage's own rows change as asked, and the copy it makes for a
// lent run is never more than one run's capacity held anew.
TEST(KvStorage, LentRowsOutliveEveryWrite) {
  auto s = backend::make_kv_storage(Device::Cpu, shape_of(KvType::F32));
  reserve_all(*s, 8);
  append_positions(*s, 0, {0, 1, 2, 3, 4, 5});
  const auto lent_copy = [](const LentRun& l) {
    const auto* k = static_cast<const float*>(l.rows.k);
    const auto* v = static_cast<const float*>(l.rows.v);
    std::vector<float> out(k, k + l.rows.len * l.rows.k_stride);
    out.insert(out.end(), v, v + l.rows.len * l.rows.v_stride);
    for (int64_t i = 0; i < l.rows.len; ++i) out.push_back(static_cast<float>(l.rows.pos[i]));
    return out;
  };
  using Write = std::function<void(KvStorage&)>;
  const std::vector<std::pair<const char*, Write>> writes = {
      {"compact", [](KvStorage& st) { st.compact(0, 1, std::vector<int32_t>{1, 3, 5}); }},
      {"drop_front", [](KvStorage& st) { st.drop_front(0, 1, 2); }},
      {"truncate+append", [](KvStorage& st) { st.truncate(0, 1, 2); st.truncate(0, 0, 2); append_positions(st, 0, {40, 41}); }},
      {"rewrite_rows", [](KvStorage& st) { const std::vector<float> k(kDk, 7.f), v(kDv, 7.f); const int32_t p = 9; st.rewrite_rows(0, 1, 0, 1, k.data(), v.data(), &p); }},
      {"keep_key_channels", [](KvStorage& st) { st.keep_key_channels(0, 1, std::vector<int32_t>{0, 2}); }},
      {"assign", [](KvStorage& st) { const KvRun other = st.host_run(0, 0).slots(0, 1); st.assign(0, 1, other); }},
  };
  for (const auto& [name, write] : writes) {
    SCOPED_TRACE(name);
    auto st = s->clone();
    reserve_all(*st, 8);
    LentRun lent = st->lend(0, 1);
    ASSERT_NE(lent.owner, nullptr);
    EXPECT_EQ(lent.rows.k, st->host_run(0, 1).k);  // zero copy: the run's own memory
    const std::vector<float> before = lent_copy(lent);
    const size_t held = st->bytes_held();
    write(*st);
    EXPECT_EQ(lent_copy(lent), before);
    EXPECT_NE(lent_copy({st->host_run(0, 1), nullptr}), before);  // while the storage's own rows changed
    EXPECT_LE(st->bytes_held(), held);  // the reader's rows are its own, not the storage's
    st.reset();                         // the storage gone, the lent rows are still there
    EXPECT_EQ(lent_copy(lent), before);
  }
  // Without a reader the storage writes in place (no copy): the run keeps its memory.
  auto st = s->clone();
  reserve_all(*st, 8);
  const void* k = st->host_run(0, 1).k;
  { const LentRun released = st->lend(0, 1); }
  st->compact(0, 1, std::vector<int32_t>{0, 2});
  EXPECT_EQ(st->host_run(0, 1).k, k);
  EXPECT_EQ(positions(*st, 0, 1), (std::vector<int32_t>{0, 2}));
}
