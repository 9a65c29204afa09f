#include "heap_policy.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace kvsqueeze::server {

void configure_heap() {
#if defined(__GLIBC__)
  mallopt(M_ARENA_MAX, 4);
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);  // setting it also turns glibc's dynamic threshold off
  mallopt(M_TRIM_THRESHOLD, 1 << 20);
#endif
}

void HeapTrimmer::request_ended() {
  const auto now = std::chrono::steady_clock::now();
  if (now - last_ < interval_) return;
  last_ = now;
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

}  // namespace kvsqueeze::server
