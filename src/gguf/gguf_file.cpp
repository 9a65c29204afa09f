#include "kvsqueeze/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <sstream>

#include "kvsqueeze/error.h"

namespace kvsqueeze {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
// Sanity limits: real files are far below them, corrupt ones are caught before huge allocations.
constexpr uint64_t kMaxStringBytes = 1ull << 30;
constexpr uint64_t kMaxArrayItems = 1ull << 28;
constexpr uint64_t kMaxCount = 1ull << 24;
constexpr int kMaxArrayDepth = 4;

// Bounds-checked little-endian cursor over the mapped bytes.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& label) : data_(data), size_(size), label_(label) {}

  template <typename T>
  T read() {
    need(sizeof(T));
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  std::string read_string() {
    uint64_t n = read<uint64_t>();
    if (n > kMaxStringBytes) fail("string length " + std::to_string(n) + " is implausible");
    need(n);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }
  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(label_ + ": corrupt GGUF at byte " + std::to_string(pos_) + ": " + what);
  }

 private:
  void need(uint64_t n) const {
    if (n > size_ - pos_) fail("file is truncated (needs " + std::to_string(n) + " more bytes)");
  }
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& label_;
};

GgufValue read_value(Cursor& cur, GgufValueType type, int depth);

// Bytes of a fixed-size value type (0 for strings and arrays).
uint64_t value_size(GgufValueType type) {
  switch (type) {
    case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::BOOL: return 1;
    case GgufValueType::UINT16: case GgufValueType::INT16: return 2;
    case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::FLOAT32: return 4;
    case GgufValueType::UINT64: case GgufValueType::INT64: case GgufValueType::FLOAT64: return 8;
    default: return 0;
  }
}

GgufValue read_array(Cursor& cur, int depth) {
  if (depth >= kMaxArrayDepth) cur.fail("arrays nested too deeply");
  auto element_type = static_cast<GgufValueType>(cur.read<uint32_t>());
  if (static_cast<uint32_t>(element_type) > 12) cur.fail("unknown array element type " + std::to_string(static_cast<uint32_t>(element_type)));
  uint64_t n = cur.read<uint64_t>();
  if (n > kMaxArrayItems) cur.fail("array length " + std::to_string(n) + " is implausible");
  // Every element takes at least this many bytes of the file: a count the rest of the file
  // cannot hold is corrupt, and is caught before reserving memory for it.
  const uint64_t min_bytes = element_type == GgufValueType::STRING ? 8
                             : element_type == GgufValueType::ARRAY ? 12
                                                                    : std::max<uint64_t>(1, value_size(element_type));
  if (n > cur.remaining() / min_bytes) cur.fail("array of " + std::to_string(n) + " elements does not fit in the file (truncated)");
  auto array = std::make_shared<GgufArray>();
  array->element_type = element_type;
  array->items.reserve(n);
  for (uint64_t i = 0; i < n; ++i) array->items.push_back(read_value(cur, element_type, depth + 1));
  GgufValue v;
  v.type = GgufValueType::ARRAY;
  v.data = std::move(array);
  return v;
}

GgufValue read_value(Cursor& cur, GgufValueType type, int depth) {
  GgufValue v;
  v.type = type;
  switch (type) {
    case GgufValueType::UINT8: v.data = uint64_t{cur.read<uint8_t>()}; break;
    case GgufValueType::INT8: v.data = int64_t{cur.read<int8_t>()}; break;
    case GgufValueType::UINT16: v.data = uint64_t{cur.read<uint16_t>()}; break;
    case GgufValueType::INT16: v.data = int64_t{cur.read<int16_t>()}; break;
    case GgufValueType::UINT32: v.data = uint64_t{cur.read<uint32_t>()}; break;
    case GgufValueType::INT32: v.data = int64_t{cur.read<int32_t>()}; break;
    case GgufValueType::UINT64: v.data = cur.read<uint64_t>(); break;
    case GgufValueType::INT64: v.data = cur.read<int64_t>(); break;
    case GgufValueType::FLOAT32: v.data = double{cur.read<float>()}; break;
    case GgufValueType::FLOAT64: v.data = cur.read<double>(); break;
    case GgufValueType::BOOL: {
      uint8_t b = cur.read<uint8_t>();
      if (b > 1) cur.fail("bool value " + std::to_string(b) + " is not 0 or 1");
      v.data = b != 0;
      break;
    }
    case GgufValueType::STRING: v.data = cur.read_string(); break;
    case GgufValueType::ARRAY: return read_array(cur, depth);
    default: cur.fail("unknown metadata value type " + std::to_string(static_cast<uint32_t>(type)));
  }
  return v;
}

}  // namespace

const char* gguf_value_type_name(GgufValueType type) {
  static const char* names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                "bool", "string", "array", "uint64", "int64", "float64"};
  auto i = static_cast<uint32_t>(type);
  return i < 13 ? names[i] : "unknown";
}

bool GgufValue::is_integer() const {
  return std::holds_alternative<uint64_t>(data) || std::holds_alternative<int64_t>(data);
}

int64_t GgufValue::as_int() const {
  if (auto* u = std::get_if<uint64_t>(&data)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) throw Error("integer value out of range");
    return static_cast<int64_t>(*u);
  }
  if (auto* i = std::get_if<int64_t>(&data)) return *i;
  if (auto* b = std::get_if<bool>(&data)) return *b ? 1 : 0;
  throw Error(std::string("expected an integer, found ") + gguf_value_type_name(type));
}

double GgufValue::as_float() const {
  if (auto* d = std::get_if<double>(&data)) return *d;
  if (is_integer()) return static_cast<double>(as_int());
  throw Error(std::string("expected a number, found ") + gguf_value_type_name(type));
}

bool GgufValue::as_bool() const {
  if (auto* b = std::get_if<bool>(&data)) return *b;
  if (is_integer()) return as_int() != 0;
  throw Error(std::string("expected a bool, found ") + gguf_value_type_name(type));
}

const std::string& GgufValue::as_string() const {
  if (auto* s = std::get_if<std::string>(&data)) return *s;
  throw Error(std::string("expected a string, found ") + gguf_value_type_name(type));
}

const GgufArray& GgufValue::as_array() const {
  if (auto* a = std::get_if<std::shared_ptr<GgufArray>>(&data)) return **a;
  throw Error(std::string("expected an array, found ") + gguf_value_type_name(type));
}

std::string GgufValue::to_display(size_t max_items) const {
  std::ostringstream out;
  if (auto* u = std::get_if<uint64_t>(&data)) out << *u;
  else if (auto* i = std::get_if<int64_t>(&data)) out << *i;
  else if (auto* d = std::get_if<double>(&data)) out << *d;
  else if (auto* b = std::get_if<bool>(&data)) out << (*b ? "true" : "false");
  else if (auto* s = std::get_if<std::string>(&data)) {
    if (s->size() > 120) out << '"' << s->substr(0, 117) << "...\" (" << s->size() << " bytes)";
    else out << '"' << *s << '"';
  } else {
    const auto& a = as_array();
    out << "[" << gguf_value_type_name(a.element_type) << " x " << a.items.size() << "]";
    if (!a.items.empty()) {
      out << " {";
      for (size_t i = 0; i < a.items.size() && i < max_items; ++i) out << (i ? ", " : "") << a.items[i].to_display(0);
      if (a.items.size() > max_items) out << ", ...";
      out << "}";
    }
  }
  return out.str();
}

int64_t GgufTensorInfo::n_elements() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw Error(path + ": cannot open model file: " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size < 24) {
    ::close(fd);
    throw Error(path + ": not a GGUF file (only " + std::to_string(size) + " bytes)");
  }
  void* map = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) throw Error(path + ": mmap failed: " + std::strerror(errno));
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = path;
  file->base_ = static_cast<const uint8_t*>(map);
  file->size_ = size;
  file->mapped_ = true;
  file->parse_all();
  return file;
}

std::unique_ptr<GgufFile> GgufFile::parse(const uint8_t* bytes, size_t size, const std::string& label) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = label;
  file->base_ = bytes;
  file->size_ = size;
  file->parse_all();
  return file;
}

GgufFile::~GgufFile() {
  if (mapped_) munmap(const_cast<uint8_t*>(base_), size_);
}

void GgufFile::parse_all() {
  Cursor cur(base_, size_, path_);
  if (cur.read<uint32_t>() != kMagic) throw Error(path_ + ": not a GGUF file (wrong magic)");
  version_ = cur.read<uint32_t>();
  if (version_ != 2 && version_ != 3)
    throw Error(path_ + ": unsupported GGUF version " + std::to_string(version_) + " (supported: 2, 3)");
  uint64_t n_tensors = cur.read<uint64_t>();
  uint64_t n_kv = cur.read<uint64_t>();
  if (n_tensors > kMaxCount) cur.fail("tensor count " + std::to_string(n_tensors) + " is implausible");
  if (n_kv > kMaxCount) cur.fail("metadata count " + std::to_string(n_kv) + " is implausible");

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = cur.read_string();
    auto type = static_cast<GgufValueType>(cur.read<uint32_t>());
    GgufValue value = read_value(cur, type, 0);
    if (metadata_index_.count(key)) cur.fail("duplicate metadata key '" + key + "'");
    metadata_index_[key] = metadata_.size();
    metadata_.emplace_back(std::move(key), std::move(value));
  }
  if (auto* a = find("general.alignment")) {
    int64_t al = a->is_integer() ? a->as_int() : 0;
    if (al <= 0 || (al & (al - 1)) != 0 || al > 65536)
      cur.fail("general.alignment must be a power of two, found " + a->to_display());
    alignment_ = static_cast<size_t>(al);
  }

  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = cur.read_string();
    uint32_t n_dims = cur.read<uint32_t>();
    if (n_dims == 0 || n_dims > 4) cur.fail("tensor '" + t.name + "' has " + std::to_string(n_dims) + " dimensions (1 to 4 allowed)");
    int64_t n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      int64_t dim = cur.read<int64_t>();
      if (dim < 0 || dim > (int64_t{1} << 40)) cur.fail("tensor '" + t.name + "' has dimension " + std::to_string(dim));
      if (dim != 0 && n_elements > (int64_t{1} << 42) / dim) cur.fail("tensor '" + t.name + "' is implausibly large");
      n_elements *= dim;
      t.shape.push_back(dim);
    }
    uint32_t raw_type = cur.read<uint32_t>();
    auto info = tensor_type_info(raw_type);
    if (!info) cur.fail("tensor '" + t.name + "' has unknown type " + std::to_string(raw_type));
    t.type = static_cast<TensorType>(raw_type);
    if (t.shape[0] % info->block_size != 0)
      cur.fail("tensor '" + t.name + "' row length " + std::to_string(t.shape[0]) + " is not a multiple of the " +
               info->name + " block size " + std::to_string(info->block_size));
    t.n_bytes = static_cast<size_t>(n_elements / info->block_size) * info->block_bytes;
    t.offset = cur.read<uint64_t>();
    if (t.offset % alignment_ != 0) cur.fail("tensor '" + t.name + "' offset is not aligned to " + std::to_string(alignment_));
    if (tensor_index_.count(t.name)) cur.fail("duplicate tensor '" + t.name + "'");
    tensor_index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  size_t data_start = (cur.pos() + alignment_ - 1) / alignment_ * alignment_;
  if (data_start > size_ && !tensors_.empty()) throw Error(path_ + ": file is truncated before the tensor data");
  for (auto& t : tensors_) {
    if (t.offset > size_ || t.n_bytes > size_ - data_start || t.offset > size_ - data_start - t.n_bytes)
      throw Error(path_ + ": file is truncated: tensor '" + t.name + "' (" + std::to_string(t.n_bytes) +
                  " bytes at data offset " + std::to_string(t.offset) + ") extends past the end of the file");
    t.data = base_ + data_start + t.offset;
  }
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

namespace {
template <typename F>
auto typed_get(const GgufFile& f, const std::string& key, F&& get) {
  const GgufValue* v = f.find(key);
  if (!v) throw Error(f.path() + ": missing metadata key '" + key + "'");
  try {
    return get(*v);
  } catch (const Error& e) {
    throw Error(f.path() + ": metadata key '" + key + "': " + e.what());
  }
}
}  // namespace

int64_t GgufFile::get_int(const std::string& key) const {
  return typed_get(*this, key, [](const GgufValue& v) { return v.as_int(); });
}
double GgufFile::get_float(const std::string& key) const {
  return typed_get(*this, key, [](const GgufValue& v) { return v.as_float(); });
}
const std::string& GgufFile::get_string(const std::string& key) const {
  return *typed_get(*this, key, [](const GgufValue& v) { return &v.as_string(); });
}
std::optional<int64_t> GgufFile::get_int_opt(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  return get_int(key);
}
std::optional<double> GgufFile::get_float_opt(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  return get_float(key);
}
std::optional<std::string> GgufFile::get_string_opt(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  return get_string(key);
}
std::optional<bool> GgufFile::get_bool_opt(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  return typed_get(*this, key, [](const GgufValue& v) { return v.as_bool(); });
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace kvsqueeze
