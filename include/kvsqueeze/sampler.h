#pragma once
// Next-token selection: greedy when temperature is 0, else seeded sampling with
// top-k, top-p and min-p filters (applied in that order, then temperature).
#include <cstdint>
#include <random>
#include <vector>

namespace kvsqueeze {

struct SamplerOptions {
  float temperature = 0.0f;  // 0: greedy
  int32_t top_k = 40;        // 0: off
  float top_p = 0.95f;       // 1: off
  float min_p = 0.05f;       // 0: off
  uint64_t seed = 42;
};

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& options);
  int32_t sample(const std::vector<float>& logits);
  // Validates options; throws kvsqueeze::Error naming the bad one and its valid range.
  static void validate(const SamplerOptions& options);

 private:
  SamplerOptions options_;
  std::mt19937_64 rng_;
};

// Index of the largest logit; ties go to the lowest index (as torch.argmax).
int32_t argmax(const std::vector<float>& logits);

}  // namespace kvsqueeze
