#include "backend/cpu/slot_buffer.h"

#include <sys/mman.h>

#include <cstdlib>
#include <new>

namespace kvsqueeze {
namespace {
constexpr size_t kMapThreshold = 64 * 1024;
}

SlotBuffer::SlotBuffer(size_t bytes) : size_(bytes) {
  if (bytes == 0) return;
  if (bytes >= kMapThreshold) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    block_.reset(static_cast<uint8_t*>(p), [bytes](uint8_t* q) { munmap(q, bytes); });
  } else {
    auto* p = static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
    if (!p) throw std::bad_alloc();
    block_.reset(p, [](uint8_t* q) { std::free(q); });
  }
}

}  // namespace kvsqueeze
