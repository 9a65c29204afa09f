#pragma once
// The server's malloc settings. A long-running server with many HTTP threads frees what its
// requests allocated, but glibc keeps it: one arena per thread that allocated (up to 8 per core),
// and a dynamic mmap threshold that, once a large block was freed, serves later large blocks
// (prefill scratch, caches) from those arenas, where the space they leave is rarely returned.
// So RSS crept up under a steady load (docs/SERVING.md, soak). Here: few arenas, a fixed mmap
// threshold (large blocks are mapped and unmapped whole), and freed arena pages handed back to the
// kernel (malloc_trim) at most every `interval` after requests ended.
#include <chrono>

namespace kvsqueeze::server {

// Call once at start-up, before the worker threads exist.
void configure_heap();

class HeapTrimmer {
 public:
  explicit HeapTrimmer(std::chrono::milliseconds interval = std::chrono::milliseconds(1000)) : interval_(interval) {}
  // A request ended: trims if the last trim is older than the interval.
  void request_ended();

 private:
  std::chrono::milliseconds interval_;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace kvsqueeze::server
