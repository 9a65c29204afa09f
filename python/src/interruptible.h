#pragma once
// Native work that Ctrl-C can interrupt. Python runs signal handlers only on the main thread and
// only when that thread runs Python code, so a long prefill holding the main thread would ignore
// Ctrl-C. Here the work runs on a helper thread while the calling thread, without the GIL, wakes
// every 50 ms to run the handlers (PyErr_CheckSignals): on KeyboardInterrupt it sets the engine's
// cancel flag, waits for the engine to stop at its next check (between prefill chunks, before
// each token) and lets the exception propagate. Off the main thread no signal can arrive, so the
// work runs right there with the GIL released.
#include <Python.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include <nanobind/nanobind.h>

namespace kvsqueeze::python {

inline bool on_main_thread() {
  nanobind::module_ threading = nanobind::module_::import_("threading");
  return threading.attr("current_thread")().is(threading.attr("main_thread")());
}

// Runs fn() (which must not touch Python without taking the GIL) and returns its result; its
// exceptions propagate. Called with the GIL held.
template <class F>
auto run_interruptible(std::atomic<bool>& cancel, F&& fn) -> decltype(fn()) {
  using R = decltype(fn());
  if (!on_main_thread()) {
    nanobind::gil_scoped_release release;
    return fn();
  }
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::optional<R> result;
  std::exception_ptr error;
  std::thread worker([&] {
    // One Python thread state for the whole run, made here (waiting for the GIL until the calling
    // thread releases it below) and kept with the GIL released: a streaming callback's GIL
    // acquisition then reuses it instead of creating and destroying one for every piece of text.
    const PyGILState_STATE gil = PyGILState_Ensure();
    PyThreadState* state = PyEval_SaveThread();
    try {
      result.emplace(fn());
    } catch (...) {
      error = std::current_exception();
    }
    PyEval_RestoreThread(state);
    PyGILState_Release(gil);
    std::lock_guard<std::mutex> lock(mu);
    done = true;
    cv.notify_all();
  });
  bool interrupted = false;
  for (;;) {
    bool finished = false;
    {
      nanobind::gil_scoped_release release;
      std::unique_lock<std::mutex> lock(mu);
      finished = cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return done; });
    }
    if (finished) break;
    if (PyErr_CheckSignals() != 0) {  // a handler raised (KeyboardInterrupt): stop the engine
      interrupted = true;
      cancel.store(true);
      nanobind::gil_scoped_release release;
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return done; });
      break;
    }
  }
  worker.join();
  if (interrupted) {
    // The engine's CancelledError (or a result cut short) gives way to the KeyboardInterrupt
    // already set by the handler.
    throw nanobind::python_error();
  }
  if (error) std::rethrow_exception(error);
  return std::move(*result);
}

}  // namespace kvsqueeze::python
