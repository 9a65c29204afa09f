// The read-bandwidth probe (include/kvsqueeze/bandwidth.h): a streaming sum over a large buffer,
// one contiguous share per OpenMP thread, with independent accumulators so that the loads, not
// the adds, set the pace. Built once (baseline x86-64): 16-byte loads already outrun memory.
#include "kvsqueeze/bandwidth.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>

#include "kernels/huge_pages.h"
#include "kernels/threading.h"
#include "kvsqueeze/error.h"

namespace kvsqueeze {
namespace {

uint64_t sum_words(const uint64_t* p, size_t n) {
  uint64_t a[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) a[k] += p[i + static_cast<size_t>(k)];
  for (; i < n; ++i) a[0] += p[i];
  return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

}  // namespace

ReadBandwidth measure_read_bandwidth(size_t bytes, int threads, int passes) {
  if (bytes < (size_t{1} << 20)) throw Error("the bandwidth probe needs a buffer of at least 1 MiB");
  if (passes < 1) throw Error("the bandwidth probe needs at least one pass");
  if (threads <= 0) threads = kernels::num_threads();
  const size_t words = bytes / sizeof(uint64_t);
  // The same pages the packed weights get, so the bound is what the weights' reads can reach.
  const std::shared_ptr<uint8_t> buffer = kernels::allocate_huge_pages(words * sizeof(uint64_t));
  auto* data = reinterpret_cast<uint64_t*>(buffer.get());
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i = 0; i < words; ++i) data[i] = i;  // each thread touches the share it will read

  ReadBandwidth out{.bytes = words * sizeof(uint64_t), .threads = threads, .passes = passes, .gb_per_s = 0};
  volatile uint64_t sink = 0;  // the sums are used, so the reads cannot be dropped
  for (int pass = 0; pass < passes; ++pass) {
    uint64_t total = 0;
    const auto start = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      const size_t t = static_cast<size_t>(omp_get_thread_num()), nt = static_cast<size_t>(omp_get_num_threads());
      const size_t begin = words * t / nt, end = words * (t + 1) / nt;
      total += sum_words(data + begin, end - begin);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    sink = sink + total;
    out.gb_per_s = std::max(out.gb_per_s, static_cast<double>(out.bytes) / seconds / 1e9);
  }
  return out;
}

}  // namespace kvsqueeze
