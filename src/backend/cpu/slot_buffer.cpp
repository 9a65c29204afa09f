#include "backend/cpu/slot_buffer.h"

#include <sys/mman.h>

#include <cstdlib>
#include <new>
#include <utility>

namespace kvsqueeze {
namespace {
constexpr size_t kMapThreshold = 64 * 1024;
}

SlotBuffer::SlotBuffer(size_t bytes) : size_(bytes) {
  if (bytes == 0) return;
  if (bytes >= kMapThreshold) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    data_ = static_cast<uint8_t*>(p);
    mapped_ = true;
  } else {
    data_ = static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
    if (!data_) throw std::bad_alloc();
  }
}

SlotBuffer::~SlotBuffer() { release(); }

SlotBuffer::SlotBuffer(SlotBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), mapped_(std::exchange(o.mapped_, false)) {}

SlotBuffer& SlotBuffer::operator=(SlotBuffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    mapped_ = std::exchange(o.mapped_, false);
  }
  return *this;
}

void SlotBuffer::release() {
  if (!data_) return;
  if (mapped_) munmap(data_, size_);
  else std::free(data_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace kvsqueeze
