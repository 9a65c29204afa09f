#pragma once
// The KV cache: per layer and per KV head, a run of (post-RoPE key, value, original position)
// slots with its own length and preallocated capacity. Appends are O(1) per head, compaction
// to any keep-set is in place, and releasing slack returns the memory: the bytes reported as
// held are the bytes allocated. Positions stay ascending within a run.
// KvCache keeps the rules (sliding windows, rollback protection, growth, argument checks); the
// runs' memory belongs to a backend::KvStorage on the session's device (src/backend/kv_storage.h).
// A run's key rows may hold only some of the head_dim_k channels (ThinK key-channel pruning):
// then every key of that run, held or appended later, stores just those channels, and the
// others count as zero in attention.
#include <cstddef>
#include <climits>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kvsqueeze/device.h"
#include "kvsqueeze/kv_run.h"

namespace kvsqueeze {

namespace backend {
class KvStorage;
}

const char* kv_type_name(KvType type);
// A transform of the stored rows that makes quantization lose less (kv_rotation, kv_centering):
// Auto applies it to the quantized types, On to every type, Off to none.
enum class KvTransform { Auto, On, Off };
// auto | on | off; throws ParameterError naming `parameter` on anything else.
KvTransform parse_kv_transform(const std::string& name, const std::string& parameter);
const char* kv_transform_name(KvTransform transform);
// Whether value rows of `type` (and key rows, but for kv_keys_rotated's exception) are stored
// rotated under `rotation`.
bool kv_rows_rotated(KvTransform rotation, KvType type);
// Whether keys of `k_type` are stored rotated: as kv_rows_rotated, except that Auto leaves KIVI2
// keys unrotated (quantized per channel, they keep outlier channels apart by themselves, and a
// rotation spreading those channels over all others more than doubles the KL divergence on
// Qwen2.5; docs/QUANTIZATION.md).
bool kv_keys_rotated(KvTransform rotation, KvType k_type);
// Whether keys of `k_type` are stored centred (a per-channel offset taken off) under `centering`.
bool kv_keys_centered(KvTransform centering, KvType k_type);
// f32 | f16 | bf16 | q8_0 | q4_0 | kivi2; throws kvsqueeze::Error naming `what` on anything else.
KvType parse_kv_type(const std::string& name, const std::string& what = "kv_type");
// "f16" when keys and values share a type, else "q8_0/f16" (keys/values).
std::string kv_types_label(KvType k_type, KvType v_type);
// Bytes one cached slot of one KV head takes: its key row, its value row and its position. A
// KIVI2 key's 2-bit codes (d / 4 bytes) and its share of its group's parameters (4d bytes per 32
// slots) add up to kv_row_bytes(KIVI2, d) exactly; the recent window's f16 rows are not counted.
constexpr size_t kv_slot_bytes(KvType k_type, KvType v_type, int64_t head_dim_k, int64_t head_dim_v) {
  return kv_row_bytes(k_type, head_dim_k) + kv_row_bytes(v_type, head_dim_v) + sizeof(int32_t);
}

struct KvCacheShape {
  int64_t n_layer = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim_k = 0;
  int64_t head_dim_v = 0;
  KvType k_type = KvType::F16;  // keys: head_dim_k must be a multiple of the type's block
  KvType v_type = KvType::F16;  // values: likewise head_dim_v
  // Keys stored Walsh-Hadamard rotated over the head dimension (runs whose channels ThinK pruned
  // are stored as they are): quantized rows lose less to a few large channels. Values likewise
  // (attention rotates its output back).
  bool k_rotated = false;
  bool v_rotated = false;
  // Keys stored centred: each run (without pruned channels) keeps a per-channel offset, the mean
  // of the first keys appended to it, and stores key - offset.
  bool k_centered = false;
  // Per layer: > 0 for sliding-window layers, whose runs only keep what the window can see.
  std::vector<int32_t> layer_window;
};

class KvCache {
 public:
  // Runs of `initial_capacity` slots in host memory (the CPU backend's storage).
  KvCache(const KvCacheShape& shape, int64_t initial_capacity);
  // Adopts a storage and the runs it holds (a backend's, a clone's); the shape is the storage's.
  explicit KvCache(std::unique_ptr<backend::KvStorage> storage);
  ~KvCache();
  KvCache(KvCache&&) noexcept;
  KvCache& operator=(KvCache&&) noexcept;

  const KvCacheShape& shape() const { return shape_; }
  int64_t window(int64_t layer) const;
  // The memory of the runs: a backend reaches its own device's rows through it.
  backend::KvStorage& storage() { return *storage_; }
  Device device() const;  // where the runs' rows live
  const backend::KvStorage& storage() const { return *storage_; }

  // Appends n tokens to every head of `layer`: k is n rows of n_head_kv*head_dim_k floats,
  // v likewise, pos their positions (greater than every position already held).
  void append(int64_t layer, int64_t n, const float* k, const float* v, const int32_t* pos);
  // Makes room for n more slots in every run of the full-attention layers (sliding layers are
  // sized per chunk by prepare_append).
  void reserve(int64_t n_more);
  // Before appending n tokens at positions from `next_pos` on: drops slots no sliding-window
  // query can see any more and makes room so that the appends will not reallocate.
  void prepare_append(int32_t next_pos, int64_t n);

  // A host view of a run's stored rows, valid until the run changes (the CPU storage lends its
  // memory, a device storage a staged host copy; presses read through LayerView's accessors).
  KvRun run(int64_t layer, int64_t head) const;
  // The same rows with an owner that keeps them alive and unchanged (kv_run.h): zero-copy readers
  // (the Python package's numpy views).
  LentRun lend(int64_t layer, int64_t head) const;
  int64_t length(int64_t layer, int64_t head) const;
  int64_t capacity(int64_t layer, int64_t head) const;
  std::span<const int32_t> positions(int64_t layer, int64_t head) const;
  std::vector<std::vector<int64_t>> lengths() const;  // [layer][head]

  // Keeps the slots whose indices are listed (strictly ascending), in place.
  void compact(int64_t layer, int64_t head, std::span<const int32_t> keep);
  // Sliding-window trimming keeps what a query at `pos` would see (a rollback point, e.g. the
  // end of a context that several questions are asked about). INT32_MAX: no protection.
  void protect_query_position(int32_t pos);
  // Whether every sliding-window layer still holds what a query at `pos` would see.
  bool can_roll_back_to(int32_t pos) const;
  // Drops every slot of `layer` whose position is < pos.
  void drop_before_position(int64_t layer, int32_t pos);
  // Drops every slot whose position is >= pos (rolling back a question and its answer).
  void truncate_from_position(int32_t pos);
  // Reallocates each run to its length plus `slack` slots, returning the rest to the OS.
  void release_slack(int64_t slack);
  // The same for the runs of one layer only (decoding-time compression frees what it removed
  // from that layer without resizing the others).
  void release_layer_slack(int64_t layer, int64_t slack);
  void clear();

  // Overwrites the keys and positions of a run in place, its length unchanged: `keys` is
  // length x head_dim_k floats (stored in the cache's element type), `pos` strictly ascending.
  // Key re-rotation renumbers kept slots with this.
  void rewrite_keys(int64_t layer, int64_t head, const float* keys, const int32_t* pos);
  // Overwrites slots [first, first+n) of a run in place: keys (n x head_dim_k floats; a
  // channel-pruned run stores just its channels), values (n x head_dim_v) and positions, each
  // left as it is when null. Positions must keep the run strictly ascending. Merging presses
  // write pooled or merged rows with this before compacting.
  void rewrite_rows(int64_t layer, int64_t head, int64_t first, int64_t n, const float* keys, const float* values,
                    const int32_t* pos);

  // Keeps only `channels` (strictly ascending, a subset of the run's current channels) of every
  // key of the run, present and appended later; the K memory shrinks to the narrower rows.
  void keep_key_channels(int64_t layer, int64_t head, std::span<const int32_t> channels);
  // The key channels a run stores (ascending); empty: all head_dim_k of them.
  std::span<const int32_t> key_channels(int64_t layer, int64_t head) const;

  // Raw rows for serialisation: len rows of K (k_row_bytes(layer, head) each) and V, and positions.
  const uint8_t* k_bytes(int64_t layer, int64_t head) const;
  const uint8_t* v_bytes(int64_t layer, int64_t head) const;
  // Replaces a run's content with a copy of `rows` (loading a saved cache, copying another
  // cache's run): host rows laid out as run() lends them, in this cache's types and
  // transforms; k_channels (k_stride of them) and k_offset (head_dim_k) null when absent.
  void assign(int64_t layer, int64_t head, const KvRun& rows);
  // A centred run's per-channel key offset (head_dim_k floats); empty: none (kv_centering).
  std::span<const float> key_offset(int64_t layer, int64_t head) const;

  size_t k_row_bytes() const;  // a full key row (head_dim_k elements)
  size_t k_row_bytes(int64_t layer, int64_t head) const;  // a key row of this run (fewer after channel pruning)
  size_t v_row_bytes() const;
  size_t bytes_held() const;  // allocated: sum over runs of capacity x (K row + V row + position)
  size_t bytes_used() const;  // the same with lengths instead of capacities

 private:
  void ensure_capacity(int64_t layer, int64_t head, int64_t needed);

  KvCacheShape shape_;
  std::unique_ptr<backend::KvStorage> storage_;
  std::vector<int32_t> trimmed_below_;  // per layer: slots below this position were trimmed away
  int32_t protected_query_ = INT32_MAX;
};

// A deep copy with no slack (forking a compressed context: each question decodes from its own
// copy when decoding-time compression would otherwise evict context slots for good).
KvCache clone_cache(const KvCache& cache);
// A copy of `cache`'s runs in `storage` (empty, of the same shape): moving a cache between
// devices (a file loaded on the host into a GPU session, a GPU cache saved from the host).
KvCache copy_cache(const KvCache& cache, std::unique_ptr<backend::KvStorage> storage);

}  // namespace kvsqueeze
