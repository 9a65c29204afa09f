#pragma once
// Shared by the KV quantization tests: reading the little-endian fixtures their reference
// scripts write (tests/reference/make_kv_quant_fixtures.py, make_kivi_fixtures.py), and
// seeded Gaussian rows.
#include <cstdint>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_paths.h"

namespace quant_fixture {

// tests/fixtures/quant/<name>: checks the 8-byte magic, then reads u32s and arrays in order.
class Reader {
 public:
  Reader(const std::string& name, const std::string& magic)
      : path_(test_paths::source_dir() + "/tests/fixtures/quant/" + name), in_(path_, std::ios::binary) {
    if (!in_) throw std::runtime_error("cannot open " + path_);
    std::string got(8, '\0');
    in_.read(got.data(), 8);
    if (got != magic) throw std::runtime_error("bad magic in " + path_);
  }
  uint32_t u32() {
    uint32_t v = 0;
    in_.read(reinterpret_cast<char*>(&v), 4);
    return v;
  }
  template <typename T>
  void read(std::vector<T>& out) {  // out.size() elements
    in_.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(sizeof(T) * out.size()));
  }
  // Throws when a read ran past the end.
  void check() const {
    if (!in_) throw std::runtime_error("truncated " + path_);
  }

 private:
  std::string path_;
  std::ifstream in_;
};

inline std::vector<float> gaussian(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> x(n);
  for (auto& v : x) v = normal(rng);
  return x;
}

}  // namespace quant_fixture
