#pragma once
// How fast this machine reads memory: the bound of a memory-bound decode step (every weight and
// every cached K/V byte read once per token). Measured, not looked up: machines differ.
#include <cstddef>

namespace kvsqueeze {

struct ReadBandwidth {
  size_t bytes = 0;    // the buffer read in each pass (far larger than the caches)
  int threads = 0;     // threads reading it, each a contiguous share
  int passes = 0;      // timed passes
  double gb_per_s = 0; // the fastest pass, in 1e9 bytes per second
};

// Reads a `bytes` buffer (filled first, so its pages exist) `passes` times with `threads` threads
// (0: the kernels' thread count) and reports the fastest pass. Throws kvsqueeze::Error for fewer
// than 1 MiB or no passes.
ReadBandwidth measure_read_bandwidth(size_t bytes = size_t{1} << 30, int threads = 0, int passes = 5);

}  // namespace kvsqueeze
