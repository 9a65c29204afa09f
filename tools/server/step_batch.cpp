// One scheduler step over every running sequence: the one place where the forward passes of a step
// run. Sequences still in their prompt run its next chunk each; the generating ones step together
// through Engine::step_generation(engines), which evaluates their tokens in one batched forward
// pass (the weights read once per step for all of them).
#include <algorithm>

#include "scheduler.h"
#include "sequence.h"

namespace kvsqueeze::server {
namespace {

// The final event of a sequence whose step failed, by the kind of failure.
void fail(Job& job, Metrics& metrics, std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const ParameterError& e) {
    job.push({.final = true, .error = ApiError(400, "invalid_request_error", "", "", e.what())});
    ++metrics.requests_client_error;
  } catch (const std::exception& e) {
    job.push({.final = true, .error = ApiError(500, "server_error", "", "", e.what())});
  }
}

}  // namespace

void Scheduler::step_all() {
  std::vector<bool> done(running_.size(), false);
  std::vector<size_t> generating;
  std::vector<Engine*> engines;
  for (size_t i = 0; i < running_.size(); ++i) {
    Sequence& s = *running_[i];
    if (s.job->cancelled) {  // the client went away (or shutdown): free its sequence now
      s.job->push({.final = true, .finish_reason = "stop"});
      ++metrics_.requests_cancelled;
      done[i] = true;
    } else if (s.phase == Sequence::Phase::Context) {
      try {
        step_context(s);
      } catch (...) {
        fail(*s.job, metrics_, std::current_exception());
        done[i] = true;
      }
    } else {
      generating.push_back(i);
      engines.push_back(s.engine.get());
    }
  }
  const std::vector<Engine::BatchStep> results = Engine::step_generation(engines);
  const auto batched = std::count_if(results.begin(), results.end(), [](const Engine::BatchStep& r) { return r.batched; });
  if (batched > 0) {
    ++metrics_.decode_batches;
    metrics_.decode_batch_tokens += static_cast<uint64_t>(batched);
  }
  for (size_t j = 0; j < generating.size(); ++j) {
    Sequence& s = *running_[generating[j]];
    try {
      if (results[j].error) std::rethrow_exception(results[j].error);
      done[generating[j]] = generation_stepped(s, results[j].more);
    } catch (...) {
      fail(*s.job, metrics_, std::current_exception());
      done[generating[j]] = true;
    }
  }
  size_t kept = 0;
  for (size_t i = 0; i < running_.size(); ++i)
    if (!done[i]) running_[kept++] = std::move(running_[i]);
  running_.resize(kept);
  ++metrics_.steps;
}

}  // namespace kvsqueeze::server
