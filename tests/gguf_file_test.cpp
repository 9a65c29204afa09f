#include <gtest/gtest.h>

#include "kvsqueeze/error.h"
#include "kvsqueeze/gguf.h"
#include "test_paths.h"

using namespace kvsqueeze;

TEST(GgufFile, ReadsStories260K) {
  auto f = GgufFile::open(test_paths::stories260k());
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_int("llama.block_count"), 5);
  ASSERT_NE(f->find_tensor("token_embd.weight"), nullptr);
  EXPECT_EQ(f->find_tensor("token_embd.weight")->shape, (std::vector<int64_t>{64, 512}));
  const auto& tokens = f->find("tokenizer.ggml.tokens")->as_array();
  EXPECT_EQ(tokens.items.size(), 512u);
}

TEST(GgufFile, RejectsWrongMagic) {
  std::vector<uint8_t> bytes(64, 0);
  EXPECT_THROW(GgufFile::parse(bytes.data(), bytes.size(), "mem"), Error);
}

TEST(GgufFile, RejectsEveryTruncation) {
  auto f = GgufFile::open(test_paths::stories260k());
  std::vector<uint8_t> whole(f->file_size());
  FILE* fp = std::fopen(test_paths::stories260k().c_str(), "rb");
  ASSERT_EQ(std::fread(whole.data(), 1, whole.size(), fp), whole.size());
  std::fclose(fp);
  // Cut the file at many points, header and data alike: each must fail cleanly.
  for (size_t cut = 0; cut < whole.size(); cut += (cut < 20000 ? 97 : 40961)) {
    std::vector<uint8_t> part(whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(cut));
    EXPECT_THROW(GgufFile::parse(part.data(), part.size(), "cut"), Error) << "cut at " << cut;
  }
}

// Found by the fuzzer: an array count larger than the file could hold used to be reserved
// before reading (a 5 GB allocation from a 200-byte file).
TEST(GgufFile, HugeArrayCountIsRejectedBeforeAllocating) {
  std::vector<uint8_t> bytes = {'G', 'G', 'U', 'F', 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
  const std::string key = "tokenizer.ggml.tokens";
  const uint64_t key_len = key.size();
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<uint8_t>(key_len >> (8 * i)));
  bytes.insert(bytes.end(), key.begin(), key.end());
  for (uint8_t b : {9, 0, 0, 0, 8, 0, 0, 0}) bytes.push_back(b);                     // array of strings
  for (uint8_t b : {0, 0, 0, 0x10, 0, 0, 0, 0}) bytes.push_back(b);                 // 2^28 elements
  for (int i = 0; i < 64; ++i) bytes.push_back(0);
  try {
    GgufFile::parse(bytes.data(), bytes.size(), "mem");
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not fit in the file"), std::string::npos) << e.what();
  }
}
