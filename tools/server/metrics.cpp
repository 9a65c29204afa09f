#include "metrics.h"

#include <algorithm>
#include <cstdio>

namespace kvsqueeze::server {
namespace {

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void line(std::string& out, const std::string& name, const char* type, const std::string& help, double value) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " + number(value) + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double seconds) {
  const size_t b = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), seconds) - bounds_.begin());
  std::lock_guard<std::mutex> lock(mutex_);
  ++counts_[b];
  sum_ += seconds;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  std::lock_guard<std::mutex> lock(mutex_);
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    out += name + "_bucket{le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_sum " + number(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

double Histogram::quantile(double q) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (count_ == 0) return 0.0;
  const auto rank = static_cast<uint64_t>(q * static_cast<double>(count_ - 1)) + 1;
  uint64_t cumulative = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    cumulative += counts_[i];
    if (cumulative >= rank) return i < bounds_.size() ? bounds_[i] : bounds_.back();
  }
  return bounds_.back();
}

void Metrics::note_held(uint64_t held) {
  uint64_t peak = kv_bytes_held_peak.load();
  while (held > peak && !kv_bytes_held_peak.compare_exchange_weak(peak, held)) {
  }
}

std::string Metrics::render() const {
  std::string out;
  out += "# HELP kvsqueeze_requests_total Completion requests by outcome.\n# TYPE kvsqueeze_requests_total counter\n";
  out += "kvsqueeze_requests_total{outcome=\"ok\"} " + std::to_string(requests_ok.load()) + "\n";
  out += "kvsqueeze_requests_total{outcome=\"client_error\"} " + std::to_string(requests_client_error.load()) + "\n";
  out += "kvsqueeze_requests_total{outcome=\"busy\"} " + std::to_string(requests_server_busy.load()) + "\n";
  out += "kvsqueeze_requests_total{outcome=\"cancelled\"} " + std::to_string(requests_cancelled.load()) + "\n";
  line(out, "kvsqueeze_prompt_tokens_total", "counter", "Prompt tokens of finished requests (cached ones included).",
       static_cast<double>(prompt_tokens.load()));
  line(out, "kvsqueeze_prompt_tokens_cached_total", "counter", "Prompt tokens served from a cached compressed context.",
       static_cast<double>(cached_prompt_tokens.load()));
  line(out, "kvsqueeze_generated_tokens_total", "counter", "Tokens generated.", static_cast<double>(generated_tokens.load()));
  line(out, "kvsqueeze_queue_length", "gauge", "Requests waiting for a sequence slot or for KV budget.",
       static_cast<double>(queue_length.load()));
  line(out, "kvsqueeze_running_sequences", "gauge", "Sequences stepped by the scheduler (the running batch).",
       static_cast<double>(running.load()));
  line(out, "kvsqueeze_kv_bytes_held", "gauge", "KV cache bytes allocated by running sequences and cached contexts.",
       static_cast<double>(kv_bytes_held.load()));
  line(out, "kvsqueeze_kv_bytes_full", "gauge", "What uncompressed f16 caches of the same positions would hold.",
       static_cast<double>(kv_bytes_full.load()));
  const double held = static_cast<double>(kv_bytes_held.load()), full = static_cast<double>(kv_bytes_full.load());
  line(out, "kvsqueeze_kv_compression_ratio", "gauge", "1 - held / full over what is held now (0: none).",
       full > 0 ? std::max(0.0, 1.0 - held / full) : 0.0);
  line(out, "kvsqueeze_kv_bytes_cached", "gauge", "KV bytes held by cached compressed contexts.",
       static_cast<double>(kv_bytes_cached.load()));
  line(out, "kvsqueeze_kv_bytes_held_peak", "gauge", "The most KV bytes held at once since start.",
       static_cast<double>(kv_bytes_held_peak.load()));
  line(out, "kvsqueeze_kv_budget_bytes", "gauge", "The --kv-budget (0: none).", static_cast<double>(kv_budget_bytes.load()));
  line(out, "kvsqueeze_cached_contexts", "gauge", "Compressed contexts kept for reuse.", static_cast<double>(cached_contexts.load()));
  line(out, "kvsqueeze_context_cache_hits_total", "counter", "Requests that started from a cached compressed context.",
       static_cast<double>(context_cache_hits.load()));
  line(out, "kvsqueeze_context_cache_misses_total", "counter", "Requests that prefilled their context.",
       static_cast<double>(context_cache_misses.load()));
  line(out, "kvsqueeze_context_cache_evictions_total", "counter", "Cached contexts dropped for the budget (least recently used).",
       static_cast<double>(context_cache_evictions.load()));
  line(out, "kvsqueeze_scheduler_steps_total", "counter", "Scheduler steps (one chunk or token of every running sequence).",
       static_cast<double>(steps.load()));
  line(out, "kvsqueeze_decode_batches_total", "counter", "Forward passes over the generated tokens of the sequences decoding together (one per step).",
       static_cast<double>(decode_batches.load()));
  line(out, "kvsqueeze_decode_batch_tokens_total", "counter", "Generated tokens evaluated in those passes (divided by the passes: the mean batch size).",
       static_cast<double>(decode_batch_tokens.load()));
  line(out, "kvsqueeze_batched_prompt_chunks_total", "counter",
       "Prompt chunks evaluated in a step's shared forward pass together with other sequences' chunks or tokens.",
       static_cast<double>(batched_prompt_chunks.load()));
  time_to_first_token.render(out, "kvsqueeze_time_to_first_token_seconds", "From admission of a request to its first token.");
  inter_token.render(out, "kvsqueeze_inter_token_seconds", "Between consecutive tokens of a sequence.");
  return out;
}

}  // namespace kvsqueeze::server
