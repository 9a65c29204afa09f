// Fuzzes the prompt cache loader: any input must end in success or kvsqueeze::Error. The
// structure is parsed a second time with the checksum check off, or mutations would rarely get
// past it; what parses is then built into a KvCache (whose size the file bounds).
#include <cstddef>
#include <cstdint>

#include "kvsqueeze/cache_file.h"
#include "kvsqueeze/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (bool verify : {true, false}) {
    try {
      const kvsqueeze::CacheFileInfo info = kvsqueeze::parse_cache_file(data, size, "fuzz", verify);
      kvsqueeze::KvCache cache = kvsqueeze::cache_from_file(info, data);
      if (cache.lengths() != info.lengths()) __builtin_trap();
      if (cache.bytes_held() != cache.bytes_used()) __builtin_trap();
    } catch (const kvsqueeze::Error&) {
    }
  }
  return 0;
}
