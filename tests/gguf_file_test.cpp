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
