#pragma once
// Backing memory of one cache run. Large buffers are their own anonymous mappings, so that
// shrinking or freeing a run returns its pages to the OS at once: the bytes the cache reports
// as held are the bytes the process holds (glibc's heap would keep freed chunks mapped).
// The memory can be shared with zero-copy readers (share()): it is freed when the buffer and
// every reader have let it go, and the owner of the buffer must not write to it while shared().
#include <cstddef>
#include <cstdint>
#include <memory>

namespace kvsqueeze {

class SlotBuffer {
 public:
  SlotBuffer() = default;
  explicit SlotBuffer(size_t bytes);
  SlotBuffer(SlotBuffer&& other) noexcept = default;
  SlotBuffer& operator=(SlotBuffer&& other) noexcept = default;
  SlotBuffer(const SlotBuffer&) = delete;
  SlotBuffer& operator=(const SlotBuffer&) = delete;

  uint8_t* data() { return block_.get(); }
  const uint8_t* data() const { return block_.get(); }
  size_t size() const { return block_ ? size_ : 0; }

  // Keeps the memory alive for a reader; shared() is true until the reader lets it go.
  std::shared_ptr<const void> share() const { return block_; }
  bool shared() const { return block_.use_count() > 1; }

 private:
  std::shared_ptr<uint8_t> block_;
  size_t size_ = 0;
};

}  // namespace kvsqueeze
