#pragma once
// Native work that Ctrl-C can interrupt. Python runs signal handlers only on the main thread and
// only when that thread runs Python code, so a long prefill holding the main thread would ignore
// Ctrl-C. Here the work runs on the calling thread with the GIL released, and for its duration
// SIGINT goes to a small C handler that sets the engine's cancel flag (the engine stops at its
// next check: between prefill chunks, before each token). Afterwards Python's own handler is put
// back and the interrupt handed to it, so KeyboardInterrupt (or the user's handler) follows.
//
// An earlier version ran the work on a helper thread while the main thread woke every 50 ms to
// run the handlers: that made decode 3-7% slower than the CLI at 4K context (a fresh thread,
// hence a fresh OpenMP team, for every call; bench/bench_python_overhead.py).
#include <Python.h>

#include <signal.h>

#include <atomic>
#include <exception>
#include <optional>
#include <utility>

#include <nanobind/nanobind.h>

#include "kvsqueeze/kernels_isa.h"

namespace kvsqueeze::python {

inline bool on_main_thread() {
  nanobind::module_ threading = nanobind::module_::import_("threading");
  return threading.attr("current_thread")().is(threading.attr("main_thread")());
}

namespace detail {
// What the handler may touch: lock-free atomics only (async-signal-safe).
inline std::atomic<std::atomic<bool>*> sigint_target{nullptr};
inline std::atomic<bool> sigint_seen{false};

inline void on_sigint(int) {
  sigint_seen.store(true);
  if (std::atomic<bool>* cancel = sigint_target.load()) cancel->store(true);
}
}  // namespace detail

// Runs fn() (which must not touch Python without taking the GIL) and returns its result; its
// exceptions propagate, except that an interrupted call raises what Python's SIGINT handler
// raises (KeyboardInterrupt by default). Called with the GIL held.
template <class F>
auto run_interruptible(std::atomic<bool>& cancel, F&& fn) -> decltype(fn()) {
  struct sigaction previous {};
  // Off the main thread Python would not run a handler anyway; a SIGINT Python ignores or leaves
  // to the default action (signal.SIG_IGN / SIG_DFL) stays so; a nested call (a callback of an
  // outer one) leaves the outer call's handler in place.
  bool ours = on_main_thread() && sigaction(SIGINT, nullptr, &previous) == 0 && !(previous.sa_flags & SA_SIGINFO) &&
              previous.sa_handler != SIG_IGN && previous.sa_handler != SIG_DFL && previous.sa_handler != detail::on_sigint;
  if (ours) {
    struct sigaction handler {};
    handler.sa_handler = detail::on_sigint;
    sigemptyset(&handler.sa_mask);
    detail::sigint_seen.store(false);
    detail::sigint_target.store(&cancel);
    ours = sigaction(SIGINT, &handler, nullptr) == 0;
  }
  std::optional<decltype(fn())> result;
  std::exception_ptr error;
  {
    nanobind::gil_scoped_release release;
    try {
      result.emplace(fn());
    } catch (...) {
      error = std::current_exception();
    }
    // The next call may come from another Python thread: this one's idle workers would make
    // OpenMP see more threads than cores and stop every team's workers spinning.
    release_kernels_threads();
  }
  if (ours) {
    sigaction(SIGINT, &previous, nullptr);
    detail::sigint_target.store(nullptr);
    if (detail::sigint_seen.exchange(false)) {
      // The engine's CancelledError (or a result cut short, or one finished just as the key was
      // pressed) gives way to what Python's handler raises.
      PyErr_SetInterrupt();
      if (PyErr_CheckSignals() != 0) throw nanobind::python_error();
    }
  }
  if (error) std::rethrow_exception(error);
  return std::move(*result);
}

}  // namespace kvsqueeze::python
