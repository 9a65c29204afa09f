#pragma once
// Memory that is read end to end on every decoded token (the packed weights, the bandwidth
// probe's buffer), asked to be backed by 2 MiB pages: with 4 KiB pages a 400 MB stream crosses
// 100,000 pages per token, each a TLB miss and a stop for the hardware prefetchers.
#include <cstddef>
#include <cstdint>
#include <memory>

namespace kvsqueeze::kernels {

// bytes of zeroed memory, 2 MiB aligned, advised MADV_HUGEPAGE (the kernel's "madvise" THP mode
// honours it; "never" leaves 4 KiB pages, which only costs speed). The memory is unmapped when
// the last owner goes. Throws kvsqueeze::Error when it cannot be mapped.
std::shared_ptr<uint8_t> allocate_huge_pages(size_t bytes);

}  // namespace kvsqueeze::kernels
