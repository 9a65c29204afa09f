#pragma once
// The scheduler's view of a running request (scheduler.cpp admits and steps it, step_batch.cpp
// runs the step of all of them).
#include <chrono>
#include <memory>
#include <string>

#include "scheduler.h"

namespace kvsqueeze::server {

// A running request: its engine (one sequence), where it is, and the bytes it may come to hold.
struct Scheduler::Sequence {
  std::shared_ptr<Job> job;
  std::unique_ptr<Engine> engine;
  enum class Phase { Context, Generate } phase = Phase::Context;
  std::string key;                // plan_key of its plan: the context cache's key
  uint64_t reserved = 0;          // bytes it may hold (the budget's share)
  bool cache_context = false;     // keep its context for reuse once prefilled
  int64_t cached_tokens = 0;      // prompt tokens that came from a cached context
  size_t emitted = 0;             // tokens already sent
  std::string text;               // text completed and not yet sent (filled by on_text)
  std::chrono::steady_clock::time_point last_token;
};


}  // namespace kvsqueeze::server
