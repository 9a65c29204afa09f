// One scheduler step over every running sequence: the one place where the forward passes of a step
// run. Every sequence advances by one prompt chunk or one token through Engine::step_batch(engines),
// which evaluates the decode tokens and the prompt chunks no press watches in one batched forward
// pass (the weights read once per step for all of them); the others step alone.
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
  std::vector<size_t> stepping;
  std::vector<Engine*> engines;
  for (size_t i = 0; i < running_.size(); ++i) {
    Sequence& s = *running_[i];
    if (s.job->cancelled) {  // the client went away (or shutdown): free its sequence now
      s.job->push({.final = true, .finish_reason = "stop"});
      ++metrics_.requests_cancelled;
      done[i] = true;
    } else {
      stepping.push_back(i);
      engines.push_back(s.engine.get());
    }
  }
  const std::vector<Engine::BatchStep> results = Engine::step_batch(engines);
  const auto tokens = std::count_if(results.begin(), results.end(), [](const Engine::BatchStep& r) { return r.batched && !r.chunk; });
  const auto chunks = std::count_if(results.begin(), results.end(), [](const Engine::BatchStep& r) { return r.batched && r.chunk; });
  if (tokens > 0) {
    ++metrics_.decode_batches;
    metrics_.decode_batch_tokens += static_cast<uint64_t>(tokens);
  }
  if (chunks > 0 && chunks + tokens > 1) metrics_.batched_prompt_chunks += static_cast<uint64_t>(chunks);
  for (size_t j = 0; j < stepping.size(); ++j) {
    Sequence& s = *running_[stepping[j]];
    try {
      if (results[j].error) std::rethrow_exception(results[j].error);
      if (s.phase == Sequence::Phase::Context) {
        if (!results[j].more) context_ready(s);
      } else {
        done[stepping[j]] = generation_stepped(s, results[j].more);
      }
    } catch (...) {
      fail(*s.job, metrics_, std::current_exception());
      done[stepping[j]] = true;
    }
  }
  size_t kept = 0;
  for (size_t i = 0; i < running_.size(); ++i)
    if (!done[i]) running_[kept++] = std::move(running_[i]);
  const bool ended = kept < running_.size();
  running_.resize(kept);
  if (ended) trimmer_.request_ended();  // what the ended sequences held goes back to the system
  ++metrics_.steps;
}

}  // namespace kvsqueeze::server
