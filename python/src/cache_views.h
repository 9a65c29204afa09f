#pragma once
// One KV head's cached keys, values or positions as a read-only numpy array: a zero-copy view of
// the cache's own memory where its rows are stored as a numpy type can hold them, a decoded copy
// otherwise.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>

#include "kvsqueeze/kv_cache.h"
#include "kvsqueeze/model.h"

namespace kvsqueeze::python {

enum class CachePart { Keys, Values, Positions };

// Views keep the lent memory alive (the array's owner holds it) and the engine writes to a copy
// while they live (KvCache::lend), so an array stays valid and unchanged after the engine moves
// on or is gone. Checks `layer` and `head` (ValueError naming the parameter).
nanobind::ndarray<nanobind::numpy, nanobind::ro> cache_array(const Model& model, const KvCache& cache, CachePart part,
                                                              int64_t layer, int64_t head);
const char* cache_array_doc(CachePart part);

}  // namespace kvsqueeze::python
