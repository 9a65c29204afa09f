#include "kernels/huge_pages.h"

#include <sys/mman.h>

#include <string>

#include "kvsqueeze/error.h"

namespace kvsqueeze::kernels {

std::shared_ptr<uint8_t> allocate_huge_pages(size_t bytes) {
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t size = (bytes + kHuge - 1) / kHuge * kHuge;
  if (size == 0) return {};
  // Map one huge page more than asked and trim both ends, so the part kept starts on a 2 MiB
  // boundary (mmap only promises 4 KiB alignment, and THP maps only aligned 2 MiB ranges).
  void* map = mmap(nullptr, size + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED) throw Error("out of memory mapping " + std::to_string(bytes) + " bytes");
  const auto start = reinterpret_cast<uintptr_t>(map);
  const uintptr_t aligned = (start + kHuge - 1) / kHuge * kHuge;
  if (aligned > start) munmap(map, aligned - start);
  munmap(reinterpret_cast<void*>(aligned + size), start + kHuge - aligned);  // never empty: aligned < start + kHuge
  auto* p = reinterpret_cast<uint8_t*>(aligned);
  madvise(p, size, MADV_HUGEPAGE);  // advice only: a kernel without THP keeps 4 KiB pages
  return std::shared_ptr<uint8_t>(p, [size](uint8_t* q) { munmap(q, size); });
}

}  // namespace kvsqueeze::kernels
