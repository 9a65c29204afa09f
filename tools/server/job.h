#pragma once
// One request in flight, shared by the HTTP thread that waits on it and the scheduler thread that
// runs it: the scheduler pushes events (text, tokens, the end), the HTTP thread pops them, and
// sets `cancelled` when its client goes away.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "api_error.h"
#include "request.h"

namespace kvsqueeze::server {

struct TokenLogprob {
  std::string token;  // its text (may be part of a UTF-8 character)
  float logprob = 0.0f;
  std::vector<std::pair<std::string, float>> top;  // the most likely alternatives, best first
};

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
};

struct JobEvent {
  std::string text;                  // text completed since the last event
  std::vector<TokenLogprob> tokens;  // with logprobs requested: the tokens generated since
  bool final = false;
  std::string finish_reason;  // final: "stop" or "length"
  Usage usage;                // final
  std::optional<ApiError> error;
};

class Job {
 public:
  explicit Job(CompletionRequest r) : request(std::move(r)) {}
  const CompletionRequest request;
  std::vector<int32_t> context_ids, question_ids;  // the prompt, split where compression stops
  int64_t max_tokens = 0;
  CompressionPlan plan;  // the request's, or without a prefill press when the prompt has no context
  std::chrono::steady_clock::time_point submitted = std::chrono::steady_clock::now();
  std::atomic<bool> cancelled{false};

  void push(JobEvent e) {
    std::lock_guard<std::mutex> lock(mutex_);
    events_.push_back(std::move(e));
    cv_.notify_all();
  }
  // Waits up to `wait` for the next event; false on timeout.
  bool pop(JobEvent& out, std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!cv_.wait_for(lock, wait, [&] { return !events_.empty(); })) return false;
    out = std::move(events_.front());
    events_.pop_front();
    return true;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<JobEvent> events_;
};

}  // namespace kvsqueeze::server
