#pragma once
// The server's counters, gauges and histograms, rendered in Prometheus' text format (GET /metrics).
// Updated from the scheduler thread and the HTTP threads: every member is atomic or guarded.
#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace kvsqueeze::server {

// A fixed-bucket histogram of seconds (Prometheus cumulative buckets, sum and count).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double seconds);
  // Appends NAME_bucket{le=...}, NAME_sum and NAME_count lines.
  void render(std::string& out, const std::string& name, const std::string& help) const;
  // An estimate of quantile q in [0, 1] from the buckets (the upper bound of its bucket).
  double quantile(double q) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mutex_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

struct Metrics {
  std::atomic<uint64_t> requests_ok{0}, requests_client_error{0}, requests_server_busy{0}, requests_cancelled{0};
  std::atomic<uint64_t> prompt_tokens{0}, cached_prompt_tokens{0}, generated_tokens{0};
  std::atomic<uint64_t> context_cache_hits{0}, context_cache_misses{0}, context_cache_evictions{0};
  std::atomic<int64_t> queue_length{0}, running{0}, cached_contexts{0};
  std::atomic<uint64_t> kv_bytes_held{0}, kv_bytes_full{0}, kv_bytes_cached{0}, kv_bytes_held_peak{0}, kv_budget_bytes{0};
  std::atomic<uint64_t> steps{0};
  std::atomic<uint64_t> decode_batches{0}, decode_batch_tokens{0};  // batched forward passes, their tokens
  std::atomic<uint64_t> batched_prompt_chunks{0};  // prompt chunks that shared a pass with other sequences
  Histogram time_to_first_token{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}};
  Histogram inter_token{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}};

  // The whole exposition.
  std::string render() const;
  // Raises kv_bytes_held_peak to `held` if it is higher.
  void note_held(uint64_t held);
};

}  // namespace kvsqueeze::server
