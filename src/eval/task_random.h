#pragma once
// Seeded randomness for the task generators. std:: distributions are implementation-defined, so
// every draw here is computed from the raw std::mt19937_64 output by code of our own: the same
// seed gives the same samples with every standard library.
#include <cstdint>
#include <random>
#include <string_view>
#include <utility>
#include <vector>

namespace kvsqueeze::eval {

// A seed derived from (seed, tag, index), so that every sample has its own stream and adding
// samples, lengths or depths never changes the others.
uint64_t derive_seed(uint64_t seed, std::string_view tag, uint64_t index = 0);

class TaskRng {
 public:
  explicit TaskRng(uint64_t seed) : engine_(seed) {}

  uint64_t next() { return engine_(); }
  // Uniform in [0, n) by rejection (no modulo bias); n > 0.
  uint64_t below(uint64_t n);
  // Uniform in [lo, hi], both included.
  int64_t uniform_int(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(below(static_cast<uint64_t>(hi - lo) + 1));
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform01() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }

  // Fisher-Yates from the back.
  template <typename T>
  void shuffle(std::vector<T>& items) {
    for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[below(i)]);
  }
  // k distinct indices of [0, n) in draw order (like Python's random.sample(range(n), k)); k <= n.
  std::vector<int64_t> sample_indices(int64_t n, int64_t k);

 private:
  std::mt19937_64 engine_;
};

}  // namespace kvsqueeze::eval
