// Fuzzes everything that reads an untrusted GGUF: the container parser, the hyper-parameter
// reader and the tokenizer builder. Any input must end in success or kvsqueeze::Error.
#include <cstddef>
#include <cstdint>

#include "kvsqueeze/error.h"
#include "kvsqueeze/gguf.h"
#include "kvsqueeze/model.h"
#include "kvsqueeze/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto file = kvsqueeze::GgufFile::parse(data, size, "fuzz");
    for (const auto& [key, value] : file->metadata()) (void)value.to_display();
    try {
      (void)kvsqueeze::read_model_config(*file);
    } catch (const kvsqueeze::Error&) {
    }
    auto tok = kvsqueeze::Tokenizer::from_gguf(*file);
    auto ids = tok->encode("Hello, world! 123 <s> \xe2\x96\x81 caf\xc3\xa9", true);
    (void)tok->decode(ids);
  } catch (const kvsqueeze::Error&) {
  }
  return 0;
}
