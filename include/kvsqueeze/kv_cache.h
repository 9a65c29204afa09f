#pragma once
// The KV cache: per layer and per KV head, a run of (post-RoPE key, value, original position)
// slots with its own length and preallocated capacity, so appends are O(1) and evicting a slot
// frees its bytes. Positions stay ascending within a run.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/attention.h"

namespace kvsqueeze {

enum class KvType { F32, F16, BF16 };
const char* kv_type_name(KvType type);
KvType parse_kv_type(const std::string& name);  // f32 | f16 | bf16; throws on anything else
size_t kv_type_bytes(KvType type);

struct KvCacheShape {
  int64_t n_layer = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim_k = 0;
  int64_t head_dim_v = 0;
  KvType type = KvType::F16;
};

class KvCache {
 public:
  KvCache(const KvCacheShape& shape, int64_t initial_capacity);

  const KvCacheShape& shape() const { return shape_; }
  // Appends n tokens to every head of `layer`: k is n rows of n_head_kv*head_dim_k floats,
  // v likewise, pos their positions (greater than every position already held).
  void append(int64_t layer, int64_t n, const float* k, const float* v, const int32_t* pos);
  // Makes room for n more slots per head of every layer without reallocating later.
  void reserve(int64_t n_more);

  kernels::KvRun run(int64_t layer, int64_t head) const;
  int64_t length(int64_t layer, int64_t head) const;
  std::vector<std::vector<int64_t>> lengths() const;  // [layer][head]
  // Drops every slot whose position is >= pos (rolling back a question and its answer).
  void truncate_from_position(int32_t pos);
  void clear();

  size_t bytes_held() const;  // allocated: sum over runs of capacity x (K row + V row + position)
  size_t bytes_used() const;  // the same with lengths instead of capacities

 private:
  struct Run {
    std::vector<uint8_t> k, v;
    std::vector<int32_t> pos;
    int64_t len = 0;
    int64_t cap = 0;
  };
  Run& at(int64_t layer, int64_t head) { return runs_[static_cast<size_t>(layer * shape_.n_head_kv + head)]; }
  const Run& at(int64_t layer, int64_t head) const { return runs_[static_cast<size_t>(layer * shape_.n_head_kv + head)]; }
  void grow(Run& r, int64_t min_cap);
  void set_capacity(Run& r, int64_t cap);
  size_t k_row_bytes() const { return static_cast<size_t>(shape_.head_dim_k) * kv_type_bytes(shape_.type); }
  size_t v_row_bytes() const { return static_cast<size_t>(shape_.head_dim_v) * kv_type_bytes(shape_.type); }

  KvCacheShape shape_;
  std::vector<Run> runs_;
};

}  // namespace kvsqueeze
