#pragma once
// The prompt cache: a session's KV cache (compressed or not) saved to a file with the identity
// of its model, the token ids it covers and the logits of the last of them, and loaded back so
// that generation continues exactly as if the prompt had just been evaluated. The format is
// specified at the top of src/cache/cache_file.cpp. Every problem with a file (another model,
// truncation, corruption, an unknown version) is a kvsqueeze::Error naming the file.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kvsqueeze/kv_cache.h"
#include "kvsqueeze/session.h"

namespace kvsqueeze {

// Version 1; version 2 (written only when some run's keys are channel-pruned) adds each run's
// key-channel list; version 3 (written when key and value types differ or one is quantized)
// adds the value type and the q8_0/q4_0 types. A reader accepts all three.
inline constexpr uint32_t kCacheFileVersion = 4;

// Where one (layer, head) run lies in a parsed file.
struct CacheFileRun {
  int64_t length = 0;
  size_t positions_offset = 0;  // length little-endian int32
  std::vector<int32_t> k_channels;  // key channels the rows hold (ascending); empty: all head_dim_k
  std::vector<float> key_offset;    // a centred run's per-channel key offset; empty: none
  size_t k_offset = 0;          // length - recent rows of head_dim_k (or k_channels.size()) elements of shape.k_type
  size_t v_offset = 0;          // length - recent rows of head_dim_v elements
  // KIVI2 caches (version 4): the last `recent` slots are the f16 recent window; KIVI2 keys'
  // group parameters ((length - recent) / 32 groups).
  int64_t recent = 0;
  size_t k_groups_offset = 0, k_recent_offset = 0, v_recent_offset = 0;
};

// Everything in a cache file but the K/V rows, validated.
struct CacheFileInfo {
  uint32_t version = 0;
  uint64_t file_size = 0;
  uint64_t fingerprint = 0;
  std::string arch;        // general.architecture of the model that made it
  std::string model_name;  // general.name (may be empty)
  int64_t n_vocab = 0;
  KvCacheShape shape;
  int32_t next_position = 0;
  std::vector<int32_t> tokens;     // the ids at positions 0 .. next_position-1
  std::vector<float> last_logits;  // logits after the last token (n_vocab floats; empty if none)
  std::string meta_json;           // free-form metadata (e.g. press and ratio); may be empty
  std::vector<CacheFileRun> runs;  // [layer * n_head_kv + head]

  std::vector<std::vector<int64_t>> lengths() const;  // [layer][head]
};

struct LoadedCache {
  std::vector<int32_t> tokens;  // the ids the loaded cache covers
  std::string meta_json;
  CacheFileInfo info;
};

// Saves the session's cache. `tokens` are the ids evaluated so far (one per position:
// tokens.size() == session.next_position()). Written to a temporary file in the same directory
// and renamed, so `path` is either untouched or complete.
void save_cache(const Session& session, const std::vector<int32_t>& tokens, const std::string& path,
                const std::string& meta_json = "");

// Replaces the session's cache, next position and last logits with a saved cache. The file
// must come from the same model (by fingerprint), with the session's KV element type, and fit
// its context size. Runs keep their saved (possibly compressed, ragged) lengths: nothing is
// padded back to the uncompressed size. On error the session is unchanged.
LoadedCache load_cache(Session& session, const std::string& path);

// Reads and validates a cache file without loading it anywhere (e.g. to learn its KV type).
CacheFileInfo read_cache_info(const std::string& path);

// Parses and validates a cache file held in memory (not copied). Throws kvsqueeze::Error naming
// `label`. verify_checksum=false skips only the checksum (lets the fuzzer reach the structure).
CacheFileInfo parse_cache_file(const uint8_t* data, size_t size, const std::string& label, bool verify_checksum = true);

// A KvCache holding the runs of a parsed file, each with capacity == length.
KvCache cache_from_file(const CacheFileInfo& info, const uint8_t* data);

// 16 lowercase hex digits.
std::string fingerprint_hex(uint64_t fingerprint);

}  // namespace kvsqueeze
