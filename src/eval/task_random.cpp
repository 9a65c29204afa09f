#include "task_random.h"

#include <unordered_map>

namespace kvsqueeze::eval {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t fnv1a(std::string_view text) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char c : text) hash = (hash ^ c) * 0x100000001b3ULL;
  return hash;
}

}  // namespace

uint64_t derive_seed(uint64_t seed, std::string_view tag, uint64_t index) {
  return splitmix64(splitmix64(splitmix64(seed) ^ fnv1a(tag)) ^ index);
}

uint64_t TaskRng::below(uint64_t n) {
  // Accept only draws below the largest multiple of n, so every residue is equally likely.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x = next();
  while (x >= limit) x = next();
  return x % n;
}

std::vector<int64_t> TaskRng::sample_indices(int64_t n, int64_t k) {
  // Partial Fisher-Yates over a virtual identity array; only moved entries are stored.
  std::unordered_map<int64_t, int64_t> moved;
  auto at = [&](int64_t i) {
    auto it = moved.find(i);
    return it == moved.end() ? i : it->second;
  };
  std::vector<int64_t> picked;
  picked.reserve(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) {
    const int64_t j = i + static_cast<int64_t>(below(static_cast<uint64_t>(n - i)));
    const int64_t value_j = at(j);
    moved[j] = at(i);
    picked.push_back(value_j);
  }
  return picked;
}

}  // namespace kvsqueeze::eval
