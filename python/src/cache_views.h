#pragma once
// The KV cache as numpy, per layer and KV head: keys, values and positions as read-only arrays,
// zero-copy views of the cache's own memory where its rows are stored as numpy can hold them
// (f16 -> float16, f32 -> float32 keys and values that are not rotated, centred, channel-pruned
// or split by a KIVI2 window; positions), float32 copies of the decoded rows otherwise.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "kvsqueeze/kv_cache.h"

namespace kvsqueeze::python {

enum class CachePart { Keys, Values, Positions };
using ReadOnlyArray = nanobind::ndarray<nanobind::numpy, nanobind::ro>;

// One run's rows, held: lent by the storage (KvCache::lend: alive and unchanged while held, the
// engine writing to a copy instead), or, where the storage cannot lend (a device), copied now.
class RunArrays {
 public:
  RunArrays(const KvCache& cache, int64_t layer, int64_t head);  // checks layer and head
  ReadOnlyArray get(CachePart part) const;

 private:
  LentRun lent_;
  int64_t head_dim_k_ = 0;
  std::shared_ptr<const std::vector<float>> keys_, values_;  // copies of a run that was not lent
  std::shared_ptr<const std::vector<int32_t>> positions_;
};

// Every run of a cache at one moment (the Python KVCache of a compressed context): its arrays stay
// what they were while the engine goes on.
class CacheSnapshot {
 public:
  explicit CacheSnapshot(const KvCache& cache);
  ReadOnlyArray get(CachePart part, int64_t layer, int64_t head) const;

 private:
  int64_t n_layer_, n_head_kv_;
  std::vector<RunArrays> runs_;
};

const char* cache_array_doc(CachePart part);

}  // namespace kvsqueeze::python
