// One scheduler step over every running sequence: the one place where the forward passes of a step
// run. Today each sequence's next prefill chunk or token runs in turn on its own Engine; a batched
// forward pass (weights read once per step for all sequences) replaces this loop, and nothing else.
#include "scheduler.h"
#include "sequence.h"

namespace kvsqueeze::server {

void Scheduler::step_all() {
  for (auto it = running_.begin(); it != running_.end();) {
    Sequence& s = **it;
    bool done = false;
    if (s.job->cancelled) {  // the client went away (or shutdown): free its sequence now
      s.job->push({.final = true, .finish_reason = "stop"});
      ++metrics_.requests_cancelled;
      done = true;
    } else {
      try {
        done = step_one(s);
      } catch (const ParameterError& e) {
        s.job->push({.final = true, .error = ApiError(400, "invalid_request_error", "", "", e.what())});
        ++metrics_.requests_client_error;
        done = true;
      } catch (const std::exception& e) {
        s.job->push({.final = true, .error = ApiError(500, "server_error", "", "", e.what())});
        done = true;
      }
    }
    it = done ? running_.erase(it) : std::next(it);
  }
  ++metrics_.steps;
}

}  // namespace kvsqueeze::server
