#pragma once
// XXH64 (xxHash, 64-bit, seed 0 unless given), streaming. Used as the checksum of saved cache
// files and for model fingerprints: fast (several GB/s), no dependency, and the same digest as
// the reference implementation, so files can be checked with the `xxhsum` tool.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

namespace kvsqueeze {

class Hash64 {
 public:
  explicit Hash64(uint64_t seed = 0) : seed_(seed) { reset(); }

  void reset() {
    v_[0] = seed_ + kP1 + kP2;
    v_[1] = seed_ + kP2;
    v_[2] = seed_;
    v_[3] = seed_ - kP1;
    total_ = 0;
    buffered_ = 0;
  }

  void update(const void* data, size_t size) {
    const auto* p = static_cast<const uint8_t*>(data);
    total_ += size;
    if (buffered_ + size < 32) {
      if (size > 0) std::memcpy(buf_ + buffered_, p, size);
      buffered_ += size;
      return;
    }
    if (buffered_ > 0) {
      const size_t fill = 32 - buffered_;
      std::memcpy(buf_ + buffered_, p, fill);
      stripe(buf_);
      p += fill;
      size -= fill;
      buffered_ = 0;
    }
    for (; size >= 32; p += 32, size -= 32) stripe(p);
    if (size > 0) std::memcpy(buf_, p, size);
    buffered_ = size;
  }

  // Values are hashed as their little-endian bytes.
  template <typename T>
  void add(T value) {
    static_assert(std::is_arithmetic_v<T>);
    update(&value, sizeof value);
  }
  // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
  void add_string(std::string_view s) {
    add<uint64_t>(s.size());
    update(s.data(), s.size());
  }

  uint64_t digest() const {
    uint64_t h;
    if (total_ >= 32) {
      h = std::rotl(v_[0], 1) + std::rotl(v_[1], 7) + std::rotl(v_[2], 12) + std::rotl(v_[3], 18);
      for (uint64_t v : v_) h = (h ^ round(0, v)) * kP1 + kP4;
    } else {
      h = seed_ + kP5;
    }
    h += total_;
    const uint8_t* p = buf_;
    size_t n = buffered_;
    for (; n >= 8; p += 8, n -= 8) h = std::rotl(h ^ round(0, load64(p)), 27) * kP1 + kP4;
    if (n >= 4) {
      h = std::rotl(h ^ (static_cast<uint64_t>(load32(p)) * kP1), 23) * kP2 + kP3;
      p += 4;
      n -= 4;
    }
    for (; n > 0; ++p, --n) h = std::rotl(h ^ (*p * kP5), 11) * kP1;
    h ^= h >> 33;
    h *= kP2;
    h ^= h >> 29;
    h *= kP3;
    h ^= h >> 32;
    return h;
  }

  static uint64_t of(const void* data, size_t size, uint64_t seed = 0) {
    Hash64 h(seed);
    h.update(data, size);
    return h.digest();
  }

 private:
  static_assert(std::endian::native == std::endian::little, "kvsqueeze assumes a little-endian host");
  static constexpr uint64_t kP1 = 0x9E3779B185EBCA87ULL, kP2 = 0xC2B2AE3D27D4EB4FULL, kP3 = 0x165667B19E3779F9ULL,
                            kP4 = 0x85EBCA77C2B2AE63ULL, kP5 = 0x27D4EB2F165667C5ULL;
  static uint64_t load64(const uint8_t* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
  }
  static uint32_t load32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
  static uint64_t round(uint64_t acc, uint64_t input) { return std::rotl(acc + input * kP2, 31) * kP1; }
  void stripe(const uint8_t* p) {
    for (int i = 0; i < 4; ++i) v_[i] = round(v_[i], load64(p + 8 * i));
  }

  uint64_t seed_;
  uint64_t v_[4];
  uint64_t total_ = 0;
  uint8_t buf_[32];
  size_t buffered_ = 0;
};

}  // namespace kvsqueeze
