#pragma once
// Backing memory of one cache run. Large buffers are their own anonymous mappings, so that
// shrinking or freeing a run returns its pages to the OS at once: the bytes the cache reports
// as held are the bytes the process holds (glibc's heap would keep freed chunks mapped).
#include <cstddef>
#include <cstdint>

namespace kvsqueeze {

class SlotBuffer {
 public:
  SlotBuffer() = default;
  explicit SlotBuffer(size_t bytes);
  ~SlotBuffer();
  SlotBuffer(SlotBuffer&& other) noexcept;
  SlotBuffer& operator=(SlotBuffer&& other) noexcept;
  SlotBuffer(const SlotBuffer&) = delete;
  SlotBuffer& operator=(const SlotBuffer&) = delete;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void release();
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
};

}  // namespace kvsqueeze
