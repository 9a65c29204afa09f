// Prompt cache files: a session's KV cache saved with its model's identity, the token ids it
// covers and the logits after the last of them.
//
// Format version 1 (2 or 3, see below). Every integer and float is little-endian; there is no padding. A "str" is a
// u32 byte count followed by that many bytes (UTF-8, not NUL-terminated).
//
//   magic          8 bytes   "KVSQCACH"
//   version        u32       1 to 4 (a reader rejects every other version)
//   file_size      u64       size of the whole file in bytes, checksum included
//   fingerprint    u64       Model::fingerprint() of the model that made it
//   arch           str       general.architecture (at most 65536 bytes)
//   model_name     str       general.name, may be empty (at most 65536 bytes)
//   kv_type        u32       element type of the K rows (and of the V rows before version 3):
//                            0 = f32, 1 = f16, 2 = bf16, 3 = q8_0, 4 = q4_0 (3 and 4 from version 3 on),
//                            5 = kivi2 (version 4)
//   (versions 3 and 4:)
//   v_type         u32       element type of the V rows, the same codes
//   kv_flags       u32       bit 0: the key rows of runs without pruned channels are stored
//                            Walsh-Hadamard rotated (kernels/hadamard.h); bit 1: the value rows
//                            are; bit 2: keys are stored centred (see n_key_offset); other bits 0
//   n_layer        u32       1 .. 65536
//   n_head_kv      u32       1 .. 65536
//   head_dim_k     u32       1 .. 65536
//   head_dim_v     u32       1 .. 65536
//   layer_window   i32 x n_layer   0: full attention; > 0: sliding window of that many tokens
//   n_vocab        u32       >= 1
//   next_position  i32       >= 0: the position the next token gets
//   n_tokens       u32       == next_position
//   tokens         i32 x n_tokens  the ids at positions 0 .. n_tokens-1, each in [0, n_vocab)
//   n_logits       u32       0, or n_vocab when the logits after the last token follow
//   logits         f32 x n_logits
//   meta_json      str       empty, or a JSON document (e.g. {"press": ..., "ratio": ...})
//   runs           n_layer x n_head_kv of them, layer-major (layer 0 head 0, layer 0 head 1, ...):
//     length       u32       slots held, <= next_position (compressed runs are shorter)
//     positions    i32 x length   strictly ascending, in [0, next_position)
//     (versions 2 and 3:)
//     n_k_channels u32       0: keys hold all head_dim_k channels; else 1 .. head_dim_k - 1
//     k_channels   i32 x n_k_channels  the key channels held (ThinK pruning), strictly ascending in [0, head_dim_k)
//     (versions 3 and 4:)
//     n_key_offset u32       0, or head_dim_k for a centred run without pruned channels
//     key_offset   f32 x n_key_offset  taken off each key before it was stored (added back on reading)
//     (version 4 only:)
//     n_recent     u32       kivi2 caches: slots in the f16 recent window, < 32, length - n_recent a
//                            multiple of 32; other types: 0
//     k_rows       (length - n_recent) x head_dim_k (or n_k_channels) elements of kv_type, raw
//                  (quantized types: whole 32-element blocks, so head_dim_k and n_k_channels are
//                  multiples of 32; kivi2 keys: their 2-bit codes, a quarter byte an element)
//     v_rows       (length - n_recent) x head_dim_v elements of v_type, raw
//     (version 4 only:)
//     k_groups     kivi2 keys: (length - n_recent) / 32 groups of head_dim_k (or n_k_channels)
//                  f16 scales, then as many f16 minima; absent for other key types
//     k_recent     n_recent x head_dim_k (or n_k_channels) f16, as stored (rotated, centred)
//     v_recent     n_recent x head_dim_v f16
//   checksum       u64       XXH64 (seed 0) of every byte before it
//
// Writers write the lowest version that holds the cache: 1, 2 when some run's keys are
// channel-pruned, 3 when keys and values differ in type, a type is quantized or keys are rotated,
// 4 when a type is kivi2; so files of
// uncompressed or token-compressed f16 caches stay readable by older readers.
// A reader checks magic, version, file_size against the real size (truncation), the checksum
// (corruption), then every count against the bytes left before allocating anything for it.
// Writers write a temporary file in the target's directory and rename() it over the target.
#include "kvsqueeze/cache_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <iterator>
#include <nlohmann/json.hpp>

#include "cache/hash64.h"
#include "kvsqueeze/error.h"

namespace kvsqueeze {

static_assert(std::endian::native == std::endian::little, "cache files are written in host byte order");

namespace {

constexpr char kMagic[8] = {'K', 'V', 'S', 'Q', 'C', 'A', 'C', 'H'};
constexpr uint32_t kMaxString = 1u << 16;  // arch and model name
constexpr uint32_t kMaxDim = 1u << 16;     // n_layer, n_head_kv, head dims
constexpr size_t kFixedPrefix = 8 + 4 + 8;  // magic, version, file_size
constexpr size_t kChecksumBytes = 8;

constexpr KvType kTypesByCode[] = {KvType::F32, KvType::F16, KvType::BF16, KvType::Q8_0, KvType::Q4_0, KvType::KIVI2};

uint32_t kv_type_code(KvType t) {
  for (uint32_t code = 0; code < std::size(kTypesByCode); ++code)
    if (kTypesByCode[code] == t) return code;
  return 0;
}

// Bytes a run takes in a file of `version` after its key channels and offset: its rows (the
// recent window's count, f16 rows and KIVI2 key groups too in version 4), and positions.
uint64_t run_bytes(const KvCache& cache, int64_t l, int64_t h, uint32_t version) {
  const KvRun run = cache.run(l, h);
  const uint64_t len = static_cast<uint64_t>(run.len), recent = static_cast<uint64_t>(run.len - std::min(run.len, run.recent_first));
  uint64_t bytes = 4 * len + (len - recent) * (cache.k_row_bytes(l, h) + cache.v_row_bytes());
  if (version >= 4) {
    bytes += 4 + recent * static_cast<uint64_t>(run.k_stride + run.v_stride) * 2;
    if (run.k_type == KvType::KIVI2) bytes += (len - recent) / kKiviGroup * kivi_group_bytes(run.k_stride);
  }
  return bytes;
}

[[noreturn]] void fail(const std::string& label, const std::string& problem) {
  throw Error("cache file '" + label + "' " + problem);
}

std::string model_desc(const std::string& name, const std::string& arch, uint64_t fingerprint) {
  return "'" + (name.empty() ? std::string("unnamed") : name) + "' (" + arch + ", fingerprint " + fingerprint_hex(fingerprint) + ")";
}

// Bounds-checked little-endian reads from the file body.
class Reader {
 public:
  Reader(const uint8_t* data, size_t begin, size_t end, const std::string& label)
      : data_(data), pos_(begin), end_(end), label_(label) {}

  size_t offset() const { return pos_; }
  size_t remaining() const { return end_ - pos_; }

  [[noreturn]] void corrupt(const std::string& problem) const { fail(label_, "is corrupt: " + problem); }

  void need(uint64_t n, const std::string& what) const {
    if (n > remaining())
      corrupt(what + " needs " + std::to_string(n) + " bytes at offset " + std::to_string(pos_) + " but only " +
              std::to_string(remaining()) + " are left");
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }
  // Returns the offset of n bytes and moves past them.
  size_t skip(uint64_t n, const std::string& what) {
    need(n, what);
    const size_t at = pos_;
    pos_ += static_cast<size_t>(n);
    return at;
  }
  std::string read_string(const std::string& what, uint64_t max) {
    const uint32_t n = read<uint32_t>(what + " length");
    if (n > max) corrupt(what + " of " + std::to_string(n) + " bytes (at most " + std::to_string(max) + ")");
    const size_t at = skip(n, what);
    return {reinterpret_cast<const char*>(data_ + at), n};
  }
  uint32_t read_dim(const std::string& what) {
    const uint32_t v = read<uint32_t>(what);
    if (v < 1 || v > kMaxDim) corrupt(what + " " + std::to_string(v) + " is outside [1, " + std::to_string(kMaxDim) + "]");
    return v;
  }

 private:
  const uint8_t* data_;
  size_t pos_, end_;
  const std::string& label_;
};

int32_t load_i32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// A read-only mapping of a whole file.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw FileError("cannot open cache file '" + path + "': " + std::strerror(errno));
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw FileError("cannot open cache file '" + path + "': not a regular file");
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* map = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      const int err = errno;
      ::close(fd);
      if (map == MAP_FAILED) throw Error("cannot read cache file '" + path + "': mmap failed: " + std::strerror(err));
      data_ = static_cast<const uint8_t*>(map);
      madvise(map, size_, MADV_SEQUENTIAL);
    } else {
      ::close(fd);
    }
  }
  ~MappedFile() {
    if (data_) munmap(const_cast<uint8_t*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Buffered writes to a temporary file that becomes `path` on commit() and is removed otherwise.
class AtomicWriter {
 public:
  explicit AtomicWriter(const std::string& path) : path_(path), tmp_(path + ".tmp-XXXXXX") {
    fd_ = mkstemp(tmp_.data());
    if (fd_ < 0) fail_errno();
    fchmod(fd_, 0644);  // mkstemp makes 0600; a cache file is no secret
    buf_.reserve(kBuffer);
  }
  ~AtomicWriter() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;

  void write(const void* data, size_t n) {
    hash_.update(data, n);
    written_ += n;
    const auto* p = static_cast<const uint8_t*>(data);
    if (buf_.size() + n > kBuffer) flush();
    if (n >= kBuffer) return write_fd(p, n);
    buf_.insert(buf_.end(), p, p + n);
  }
  template <typename T>
  void put(T v) {
    write(&v, sizeof v);
  }
  void put_string(const std::string& s) {
    put<uint32_t>(static_cast<uint32_t>(s.size()));
    write(s.data(), s.size());
  }
  uint64_t written() const { return written_; }
  uint64_t digest() const { return hash_.digest(); }

  void commit() {
    flush();
    if (::fsync(fd_) != 0) fail_errno();
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail_errno();
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) fail_errno();
    committed_ = true;
  }

 private:
  static constexpr size_t kBuffer = 1 << 20;
  [[noreturn]] void fail_errno() const { throw Error("cannot write cache file '" + path_ + "': " + std::strerror(errno)); }
  void flush() {
    write_fd(buf_.data(), buf_.size());
    buf_.clear();
  }
  void write_fd(const uint8_t* p, size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail_errno();
      p += w;
      n -= static_cast<size_t>(w);
    }
  }

  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
  std::vector<uint8_t> buf_;
  Hash64 hash_;
  uint64_t written_ = 0;
};

}  // namespace

std::string fingerprint_hex(uint64_t fingerprint) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(fingerprint));
  return buf;
}

std::vector<std::vector<int64_t>> CacheFileInfo::lengths() const {
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(shape.n_layer));
  for (int64_t l = 0; l < shape.n_layer; ++l)
    for (int64_t h = 0; h < shape.n_head_kv; ++h)
      out[static_cast<size_t>(l)].push_back(runs[static_cast<size_t>(l * shape.n_head_kv + h)].length);
  return out;
}

CacheFileInfo parse_cache_file(const uint8_t* data, size_t size, const std::string& label, bool verify_checksum) {
  if (size == 0) fail(label, "is empty");
  if (std::memcmp(data, kMagic, std::min(size, sizeof kMagic)) != 0) fail(label, "is not a kvsqueeze cache file (wrong magic)");
  if (size < sizeof kMagic + 4) fail(label, "is truncated (" + std::to_string(size) + " bytes)");
  CacheFileInfo info;
  std::memcpy(&info.version, data + sizeof kMagic, 4);
  if (info.version < 1 || info.version > kCacheFileVersion)
    fail(label, "has format version " + std::to_string(info.version) + "; this kvsqueeze reads versions 1 to " +
                    std::to_string(kCacheFileVersion) + " only");
  if (size < kFixedPrefix + kChecksumBytes) fail(label, "is truncated (" + std::to_string(size) + " bytes)");
  std::memcpy(&info.file_size, data + sizeof kMagic + 4, 8);
  if (size < info.file_size)
    fail(label, "is truncated: " + std::to_string(size) + " bytes, its header says " + std::to_string(info.file_size));
  if (size > info.file_size)
    fail(label, "is corrupt: " + std::to_string(size) + " bytes, its header says " + std::to_string(info.file_size));
  const size_t body_end = size - kChecksumBytes;
  if (verify_checksum) {
    uint64_t stored;
    std::memcpy(&stored, data + body_end, 8);
    const uint64_t computed = Hash64::of(data, body_end);
    if (stored != computed)
      fail(label, "is corrupt: checksum mismatch (stored " + fingerprint_hex(stored) + ", computed " + fingerprint_hex(computed) + ")");
  }

  Reader r(data, kFixedPrefix, body_end, label);
  info.fingerprint = r.read<uint64_t>("fingerprint");
  info.arch = r.read_string("architecture name", kMaxString);
  info.model_name = r.read_string("model name", kMaxString);
  const uint32_t known_types = info.version >= 4 ? 6 : info.version >= 3 ? 5 : 3;  // q8_0, q4_0: version 3; kivi2: 4
  const auto read_type = [&](const char* what) {
    const uint32_t code = r.read<uint32_t>(what);
    if (code >= known_types)
      r.corrupt("unknown " + std::string(what) + " " + std::to_string(code) + " in a version " + std::to_string(info.version) + " file");
    return kTypesByCode[code];
  };
  info.shape.k_type = read_type("key type");
  info.shape.v_type = info.version >= 3 ? read_type("value type") : info.shape.k_type;
  if (info.version >= 3) {
    const uint32_t flags = r.read<uint32_t>("KV flags");
    if (flags > 7) r.corrupt("unknown KV flags " + std::to_string(flags));
    info.shape.k_rotated = (flags & 1) != 0;
    info.shape.v_rotated = (flags & 2) != 0;
    info.shape.k_centered = (flags & 4) != 0;
  }
  info.shape.n_layer = r.read_dim("layer count");
  info.shape.n_head_kv = r.read_dim("KV head count");
  info.shape.head_dim_k = r.read_dim("key head size");
  info.shape.head_dim_v = r.read_dim("value head size");
  const int64_t k_block = kv_block_elems(info.shape.k_type);
  if (info.shape.head_dim_k % k_block != 0 || info.shape.head_dim_v % kv_block_elems(info.shape.v_type) != 0)
    r.corrupt("its head sizes are not whole blocks of its " + kv_types_label(info.shape.k_type, info.shape.v_type) + " rows");
  const size_t windows_at = r.skip(static_cast<uint64_t>(info.shape.n_layer) * 4, "layer windows");
  for (int64_t l = 0; l < info.shape.n_layer; ++l) {
    const int32_t w = load_i32(data + windows_at + static_cast<size_t>(l) * 4);
    if (w < 0) r.corrupt("layer " + std::to_string(l) + " has a negative window " + std::to_string(w));
    info.shape.layer_window.push_back(w);
  }
  const uint32_t n_vocab = r.read<uint32_t>("vocabulary size");
  if (n_vocab < 1 || n_vocab > static_cast<uint32_t>(INT32_MAX)) r.corrupt("vocabulary size " + std::to_string(n_vocab));
  info.n_vocab = n_vocab;
  info.next_position = r.read<int32_t>("next position");
  if (info.next_position < 0) r.corrupt("negative next position " + std::to_string(info.next_position));
  const uint32_t n_tokens = r.read<uint32_t>("token count");
  if (n_tokens != static_cast<uint32_t>(info.next_position))
    r.corrupt(std::to_string(n_tokens) + " token ids for next position " + std::to_string(info.next_position));
  const size_t tokens_at = r.skip(static_cast<uint64_t>(n_tokens) * 4, "token ids");
  info.tokens.resize(n_tokens);
  for (uint32_t i = 0; i < n_tokens; ++i) {
    const int32_t id = load_i32(data + tokens_at + static_cast<size_t>(i) * 4);
    if (id < 0 || static_cast<uint32_t>(id) >= n_vocab)
      r.corrupt("token " + std::to_string(i) + " has id " + std::to_string(id) + " outside the vocabulary of " + std::to_string(n_vocab));
    info.tokens[i] = id;
  }
  const uint32_t n_logits = r.read<uint32_t>("logit count");
  if (n_logits != 0 && n_logits != n_vocab)
    r.corrupt(std::to_string(n_logits) + " logits for a vocabulary of " + std::to_string(n_vocab));
  const size_t logits_at = r.skip(static_cast<uint64_t>(n_logits) * 4, "logits");
  info.last_logits.resize(n_logits);
  if (n_logits > 0) std::memcpy(info.last_logits.data(), data + logits_at, static_cast<size_t>(n_logits) * 4);
  info.meta_json = r.read_string("metadata", r.remaining());
  if (!info.meta_json.empty() && !nlohmann::json::accept(info.meta_json)) r.corrupt("its metadata is not valid JSON");

  const uint64_t k_row = kv_key_row_bytes(info.shape.k_type, info.shape.head_dim_k);
  const uint64_t v_row = kv_row_bytes(info.shape.v_type, info.shape.head_dim_v);
  const uint64_t n_runs = static_cast<uint64_t>(info.shape.n_layer) * static_cast<uint64_t>(info.shape.n_head_kv);
  r.need(n_runs * 4, std::to_string(n_runs) + " runs");  // each at least its length: bounds the allocation below
  info.runs.resize(static_cast<size_t>(n_runs));
  for (int64_t l = 0; l < info.shape.n_layer; ++l)
    for (int64_t h = 0; h < info.shape.n_head_kv; ++h) {
      const std::string where = "the run of layer " + std::to_string(l) + " head " + std::to_string(h);
      CacheFileRun& run = info.runs[static_cast<size_t>(l * info.shape.n_head_kv + h)];
      const uint32_t len = r.read<uint32_t>(where);
      if (len > static_cast<uint32_t>(info.next_position))
        r.corrupt(where + " holds " + std::to_string(len) + " slots but the cache covers only " +
                  std::to_string(info.next_position) + " tokens");
      run.length = len;
      run.positions_offset = r.skip(static_cast<uint64_t>(len) * 4, where + " positions");
      int64_t previous = -1;
      for (uint32_t i = 0; i < len; ++i) {
        const int32_t p = load_i32(data + run.positions_offset + static_cast<size_t>(i) * 4);
        if (p <= previous || p >= info.next_position)
          r.corrupt(where + " has position " + std::to_string(p) + " at slot " + std::to_string(i) +
                    " (positions must ascend strictly within [0, " + std::to_string(info.next_position) + "))");
        previous = p;
      }
      uint64_t row = k_row;
      if (info.version >= 2) {
        const uint32_t n_ch = r.read<uint32_t>(where + " key-channel count");
        if (n_ch >= static_cast<uint64_t>(info.shape.head_dim_k))
          r.corrupt(where + " holds " + std::to_string(n_ch) + " key channels of " + std::to_string(info.shape.head_dim_k));
        const size_t at = r.skip(static_cast<uint64_t>(n_ch) * 4, where + " key channels");
        int64_t prev = -1;
        for (uint32_t i = 0; i < n_ch; ++i) {
          const int32_t c = load_i32(data + at + static_cast<size_t>(i) * 4);
          if (c <= prev || c >= info.shape.head_dim_k)
            r.corrupt(where + " has key channel " + std::to_string(c) + " at " + std::to_string(i) +
                      " (channels must ascend strictly within [0, " + std::to_string(info.shape.head_dim_k) + "))");
          prev = c;
          run.k_channels.push_back(c);
        }
        if (n_ch % k_block != 0)
          r.corrupt(where + " holds " + std::to_string(n_ch) + " key channels, not whole blocks of its " +
                    kv_type_name(info.shape.k_type) + " keys");
        if (n_ch > 0) row = kv_key_row_bytes(info.shape.k_type, n_ch);
        if (info.version >= 3) {
          const uint32_t n_off = r.read<uint32_t>(where + " key-offset count");
          if (n_off != 0 && (n_off != static_cast<uint64_t>(info.shape.head_dim_k) || !info.shape.k_centered || n_ch != 0))
            r.corrupt(where + " has a key offset of " + std::to_string(n_off) + " values (0, or head_dim_k for a centred run "
                      "without pruned channels)");
          const size_t at_off = r.skip(static_cast<uint64_t>(n_off) * 4, where + " key offset");
          run.key_offset.resize(n_off);
          if (n_off > 0) std::memcpy(run.key_offset.data(), data + at_off, static_cast<size_t>(n_off) * 4);
          for (float x : run.key_offset)
            if (!std::isfinite(x)) r.corrupt(where + " has a key offset that is not finite");
        }
      }
      uint64_t quantized = len;
      if (info.version >= 4) {
        const uint32_t recent = r.read<uint32_t>(where + " recent-window count");
        const bool windowed = info.shape.k_type == KvType::KIVI2 || info.shape.v_type == KvType::KIVI2;
        if (!windowed && recent != 0) r.corrupt(where + " has a recent window, but only kivi2 caches keep one");
        if (windowed && (recent > len || recent >= static_cast<uint32_t>(kKiviGroup) || (len - recent) % kKiviGroup != 0))
          r.corrupt(where + " has a recent window of " + std::to_string(recent) + " of its " + std::to_string(len) +
                    " slots (fewer than 32, the rest whole groups of 32)");
        run.recent = recent;
        quantized = len - recent;
      }
      run.k_offset = r.skip(quantized * row, where + " keys");
      run.v_offset = r.skip(quantized * v_row, where + " values");
      if (info.version >= 4) {
        const uint64_t channels = run.k_channels.empty() ? static_cast<uint64_t>(info.shape.head_dim_k) : run.k_channels.size();
        if (info.shape.k_type == KvType::KIVI2)
          run.k_groups_offset = r.skip(quantized / kKiviGroup * kivi_group_bytes(static_cast<int64_t>(channels)), where + " key groups");
        run.k_recent_offset = r.skip(static_cast<uint64_t>(run.recent) * channels * 2, where + " recent keys");
        run.v_recent_offset = r.skip(static_cast<uint64_t>(run.recent) * static_cast<uint64_t>(info.shape.head_dim_v) * 2, where + " recent values");
      }
    }
  if (r.remaining() != 0) r.corrupt(std::to_string(r.remaining()) + " unexpected bytes after the last run");
  return info;
}

KvCache cache_from_file(const CacheFileInfo& info, const uint8_t* data) {
  KvCache cache(info.shape, 0);
  std::vector<int32_t> positions;
  for (int64_t l = 0; l < info.shape.n_layer; ++l)
    for (int64_t h = 0; h < info.shape.n_head_kv; ++h) {
      const CacheFileRun& run = info.runs[static_cast<size_t>(l * info.shape.n_head_kv + h)];
      positions.resize(static_cast<size_t>(run.length));  // aligned copy: the file has no alignment
      if (run.length > 0) std::memcpy(positions.data(), data + run.positions_offset, positions.size() * 4);
      // Aligned copies of what the kernels read as uint16 (the file has no alignment).
      const int64_t channels = run.k_channels.empty() ? info.shape.head_dim_k : static_cast<int64_t>(run.k_channels.size());
      std::vector<uint8_t> groups(info.shape.k_type == KvType::KIVI2 ? (run.length - run.recent) / kKiviGroup * kivi_group_bytes(channels) : 0);
      std::vector<uint16_t> k_recent(static_cast<size_t>(run.recent * channels)), v_recent(static_cast<size_t>(run.recent * info.shape.head_dim_v));
      if (!groups.empty()) std::memcpy(groups.data(), data + run.k_groups_offset, groups.size());
      if (run.recent > 0) {
        std::memcpy(k_recent.data(), data + run.k_recent_offset, k_recent.size() * 2);
        std::memcpy(v_recent.data(), data + run.v_recent_offset, v_recent.size() * 2);
      }
      KvRun rows;
      rows.len = run.length;
      rows.pos = positions.data();
      rows.k = data + run.k_offset;
      rows.v = data + run.v_offset;
      rows.k_stride = channels;
      rows.v_stride = info.shape.head_dim_v;
      rows.k_type = info.shape.k_type;
      rows.v_type = info.shape.v_type;
      rows.k_channels = run.k_channels.empty() ? nullptr : run.k_channels.data();
      rows.k_offset = run.key_offset.empty() ? nullptr : run.key_offset.data();
      if (info.version >= 4) {
        rows.recent_first = run.length - run.recent;
        rows.k_groups = groups.data();
        rows.k_recent = k_recent.data();
        rows.v_recent = v_recent.data();
      }
      cache.assign(l, h, rows);
    }
  return cache;
}

CacheFileInfo read_cache_info(const std::string& path) {
  MappedFile file(path);
  return parse_cache_file(file.data(), file.size(), path);
}

LoadedCache load_cache(Session& session, const std::string& path) {
  MappedFile file(path);
  CacheFileInfo info = parse_cache_file(file.data(), file.size(), path);
  const Model& model = session.model();
  const ModelConfig& c = model.config();
  if (info.fingerprint != model.fingerprint())
    fail(path, "was made for model " + model_desc(info.model_name, info.arch, info.fingerprint) + ", not " +
                   model_desc(c.name, c.arch_name, model.fingerprint()));
  const KvCacheShape& want = session.cache().shape();
  if (info.shape.k_rotated != want.k_rotated || info.shape.v_rotated != want.v_rotated)
    fail(path, std::string("holds rows ") + (info.shape.k_rotated || info.shape.v_rotated ? "" : "not ") +
                   "rotated otherwise than the session stores them (use `kv_rotation` " +
                   (info.shape.k_rotated || info.shape.v_rotated ? "on" : "off") + ")");
  if (info.shape.k_centered != want.k_centered)
    fail(path, std::string("holds keys ") + (info.shape.k_centered ? "" : "not ") + "centred but the session " +
                   (want.k_centered ? "centres" : "does not centre") + " them (use `kv_centering` " +
                   (info.shape.k_centered ? "on" : "off") + ")");
  if (info.shape.k_type != want.k_type || info.shape.v_type != want.v_type)
    fail(path, "holds a KV cache of type " + kv_types_label(info.shape.k_type, info.shape.v_type) + " but the session uses " +
                   kv_types_label(want.k_type, want.v_type) + " (use `kv_type_k` " + kv_type_name(info.shape.k_type) +
                   " and `kv_type_v` " + kv_type_name(info.shape.v_type) + ")");
  if (info.shape.n_layer != want.n_layer || info.shape.n_head_kv != want.n_head_kv || info.shape.head_dim_k != want.head_dim_k ||
      info.shape.head_dim_v != want.head_dim_v || info.shape.layer_window != want.layer_window || info.n_vocab != c.n_vocab)
    fail(path, "does not match the layout of model " + model_desc(c.name, c.arch_name, model.fingerprint()) +
                   " (layers, KV heads, head sizes, windows or vocabulary differ)");
  if (info.next_position > session.options().ctx_size)
    fail(path, "covers " + std::to_string(info.next_position) + " tokens, more than the context size " +
                   std::to_string(session.options().ctx_size) + " (raise `ctx_size`)");
  session.restore(cache_from_file(info, file.data()), info.next_position, info.last_logits);
  LoadedCache out;
  out.tokens = info.tokens;
  out.meta_json = info.meta_json;
  out.info = std::move(info);
  return out;
}

void save_cache(const Session& session, const std::vector<int32_t>& tokens, const std::string& path, const std::string& meta_json) {
  auto refuse = [&](const std::string& why) { throw Error("cannot save cache file '" + path + "': " + why); };
  const Model& model = session.model();
  const ModelConfig& c = model.config();
  const KvCache& cache = session.cache();
  const KvCacheShape& shape = cache.shape();
  if (static_cast<int64_t>(tokens.size()) != session.next_position())
    refuse(std::to_string(tokens.size()) + " token ids given for a session at position " + std::to_string(session.next_position()));
  for (int32_t id : tokens)
    if (id < 0 || id >= c.n_vocab) refuse("token id " + std::to_string(id) + " is outside the vocabulary");
  if (!meta_json.empty() && !nlohmann::json::accept(meta_json)) refuse("the metadata is not valid JSON");
  if (c.arch_name.size() > kMaxString || c.name.size() > kMaxString) refuse("the model's name is too long");
  const std::vector<float>& logits = session.last_logits();
  const size_t n_logits = static_cast<int64_t>(logits.size()) == c.n_vocab ? logits.size() : 0;

  // The size goes in the header, before the data it counts.
  const uint64_t n_runs = static_cast<uint64_t>(shape.n_layer * shape.n_head_kv);
  bool pruned = false;  // channel-pruned keys need version 2
  for (int64_t l = 0; l < shape.n_layer; ++l)
    for (int64_t h = 0; h < shape.n_head_kv; ++h) pruned = pruned || !cache.key_channels(l, h).empty();
  const bool typed = shape.k_type != shape.v_type || kv_type_quantized(shape.k_type) || kv_type_quantized(shape.v_type) ||
                     shape.k_rotated || shape.v_rotated || shape.k_centered;
  const bool windowed = shape.k_type == KvType::KIVI2 || shape.v_type == KvType::KIVI2;
  const uint32_t version = windowed ? 4 : typed ? 3 : pruned ? 2 : 1;
  uint64_t size = kFixedPrefix + 8 + 4 + c.arch_name.size() + 4 + c.name.size() + 4 + (version >= 3 ? 8 : 0) + 4 * 4 + 4 * static_cast<uint64_t>(shape.n_layer) +
                  4 + 4 + 4 + 4 * tokens.size() + 4 + 4 * n_logits + 4 + meta_json.size() + 4 * n_runs + kChecksumBytes;
  for (int64_t l = 0; l < shape.n_layer; ++l)
    for (int64_t h = 0; h < shape.n_head_kv; ++h)
      size += run_bytes(cache, l, h, version) + (version >= 2 ? 4 + 4 * cache.key_channels(l, h).size() : 0) +
              (version >= 3 ? 4 + 4 * cache.key_offset(l, h).size() : 0);

  AtomicWriter w(path);
  w.write(kMagic, sizeof kMagic);
  w.put<uint32_t>(version);
  w.put<uint64_t>(size);
  w.put<uint64_t>(model.fingerprint());
  w.put_string(c.arch_name);
  w.put_string(c.name);
  w.put<uint32_t>(kv_type_code(shape.k_type));
  if (version >= 3) {
    w.put<uint32_t>(kv_type_code(shape.v_type));
    w.put<uint32_t>((shape.k_rotated ? 1u : 0u) | (shape.v_rotated ? 2u : 0u) | (shape.k_centered ? 4u : 0u));
  }
  for (int64_t d : {shape.n_layer, shape.n_head_kv, shape.head_dim_k, shape.head_dim_v}) w.put<uint32_t>(static_cast<uint32_t>(d));
  for (int64_t l = 0; l < shape.n_layer; ++l) w.put<int32_t>(static_cast<int32_t>(cache.window(l)));
  w.put<uint32_t>(static_cast<uint32_t>(c.n_vocab));
  w.put<int32_t>(session.next_position());
  w.put<uint32_t>(static_cast<uint32_t>(tokens.size()));
  w.write(tokens.data(), tokens.size() * 4);
  w.put<uint32_t>(static_cast<uint32_t>(n_logits));
  w.write(logits.data(), n_logits * 4);
  w.put_string(meta_json);
  for (int64_t l = 0; l < shape.n_layer; ++l)
    for (int64_t h = 0; h < shape.n_head_kv; ++h) {
      const auto len = static_cast<size_t>(cache.length(l, h));
      w.put<uint32_t>(static_cast<uint32_t>(len));
      w.write(cache.positions(l, h).data(), len * 4);
      if (version >= 2) {  // versions 2 and 3 write every run's channel count
        const auto channels = cache.key_channels(l, h);
        w.put<uint32_t>(static_cast<uint32_t>(channels.size()));
        w.write(channels.data(), channels.size() * 4);
      }
      if (version >= 3) {
        const auto offset = cache.key_offset(l, h);
        w.put<uint32_t>(static_cast<uint32_t>(offset.size()));
        w.write(offset.data(), offset.size() * 4);
      }
      const KvRun run = cache.run(l, h);
      const auto recent = static_cast<size_t>(run.len - std::min(run.len, run.recent_first));
      if (version >= 4) w.put<uint32_t>(static_cast<uint32_t>(recent));
      w.write(run.k, (len - recent) * cache.k_row_bytes(l, h));
      w.write(run.v, (len - recent) * cache.v_row_bytes());
      if (version >= 4) {
        if (shape.k_type == KvType::KIVI2) w.write(run.k_groups, (len - recent) / kKiviGroup * kivi_group_bytes(run.k_stride));
        w.write(run.k_recent, recent * static_cast<size_t>(run.k_stride) * 2);
        w.write(run.v_recent, recent * static_cast<size_t>(run.v_stride) * 2);
      }
    }
  if (w.written() + kChecksumBytes != size) throw Error("internal: cache file size miscounted");
  const uint64_t checksum = w.digest();
  w.write(&checksum, sizeof checksum);  // hashed too, but the digest is already taken
  w.commit();
}

}  // namespace kvsqueeze
