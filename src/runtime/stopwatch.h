#pragma once
// Milliseconds since a steady-clock instant (timings reported in results and JSON).
#include <chrono>

namespace kvsqueeze {

inline double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace kvsqueeze
