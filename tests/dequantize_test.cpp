// dequantize_row against fixtures written by gguf-py (tests/reference/make_quant_fixtures.py):
// every supported type must reproduce gguf.quants.dequantize bit for bit, in every kernel variant.
#include "kernels/dequantize.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/quant_blocks.h"
#include "isa_variants.h"
#include "kvsqueeze/error.h"
#include "test_paths.h"

using namespace kvsqueeze;
using namespace kvsqueeze::kernels;

namespace {

struct Case {
  TensorType type;
  int64_t n;
  std::vector<uint8_t> data;
  std::vector<float> expected;
};

std::vector<Case> load_fixtures() {
  const std::string path = test_paths::source_dir() + "/tests/fixtures/quant/dequant.bin";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  char magic[8];
  in.read(magic, 8);
  if (std::string(magic, 8) != "KVQDQ001") throw std::runtime_error("bad magic in " + path);
  auto u32 = [&] {
    uint32_t v = 0;
    in.read(reinterpret_cast<char*>(&v), 4);
    return v;
  };
  std::vector<Case> cases(u32());
  for (auto& c : cases) {
    c.type = static_cast<TensorType>(u32());
    c.n = u32();
    c.data.resize(u32());
    in.read(reinterpret_cast<char*>(c.data.data()), static_cast<std::streamsize>(c.data.size()));
    c.expected.resize(static_cast<size_t>(c.n));
    in.read(reinterpret_cast<char*>(c.expected.data()), static_cast<std::streamsize>(4 * c.n));
  }
  if (!in) throw std::runtime_error("truncated " + path);
  return cases;
}

uint32_t bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

void expect_bit_exact(const Case& c, const std::vector<float>& got, const char* which) {
  int64_t mismatches = 0;
  for (int64_t i = 0; i < c.n; ++i) {
    if (bits(got[static_cast<size_t>(i)]) != bits(c.expected[static_cast<size_t>(i)])) {
      if (++mismatches <= 5)
        ADD_FAILURE() << which << " " << detail::type_label(c.type) << " element " << i << ": got "
                      << got[static_cast<size_t>(i)] << " expected " << c.expected[static_cast<size_t>(i)];
    }
  }
  EXPECT_EQ(mismatches, 0) << which << " " << detail::type_label(c.type);
}

class Dequantize : public isa_variants::Test {};

}  // namespace

INSTANTIATE_TEST_SUITE_P(Variants, Dequantize, ::testing::ValuesIn(isa_variants::all()), isa_variants::name);

TEST_P(Dequantize, BitExactWithGgufPy) {
  const auto cases = load_fixtures();
  std::set<TensorType> seen;
  for (const auto& c : cases) {
    seen.insert(c.type);
    ASSERT_EQ(c.data.size(), tensor_row_bytes(c.type, c.n)) << detail::type_label(c.type);
    std::vector<float> got(static_cast<size_t>(c.n), -12345.0f);
    dequantize_row(c.type, c.data.data(), got.data(), c.n);
    expect_bit_exact(c, got, "dequantize_row");
    std::vector<float> scalar(static_cast<size_t>(c.n), -12345.0f);
    detail::dequantize_row_scalar(c.type, c.data.data(), scalar.data(), c.n);
    expect_bit_exact(c, scalar, "dequantize_row_scalar");
  }
  for (auto t :
       {TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q8_0, TensorType::Q4_0, TensorType::Q4_1,
        TensorType::Q5_0, TensorType::Q5_1, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K})
    EXPECT_TRUE(seen.count(t)) << "no fixture for " << detail::type_label(t);
}

TEST_P(Dequantize, PartialRowsAndOffsets) {
  // Dequantizing a row in pieces (block-aligned) gives the same as the whole row.
  for (const auto& c : load_fixtures()) {
    const auto layout = detail::block_layout(c.type);
    const int64_t nb = c.n / layout.elems;
    std::vector<float> got(static_cast<size_t>(c.n));
    for (int64_t b = 0; b < nb; b += 3) {
      const int64_t cnt = std::min<int64_t>(3, nb - b);
      dequantize_row(c.type, c.data.data() + static_cast<size_t>(b) * layout.bytes, got.data() + b * layout.elems,
                     cnt * layout.elems);
    }
    expect_bit_exact(c, got, "pieces");
  }
}

TEST_P(Dequantize, RejectsUnsupportedTypesAndBadLengths) {
  std::vector<uint8_t> buf(1024);
  std::vector<float> out(1024);
  for (auto t : {TensorType::Q8_1, TensorType::Q2_K, TensorType::Q3_K, TensorType::Q8_K}) {
    try {
      dequantize_row(t, buf.data(), out.data(), 256);
      ADD_FAILURE() << "no throw for " << detail::type_label(t);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(detail::type_label(t)), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(dequantize_row(static_cast<TensorType>(99), buf.data(), out.data(), 32), Error);
  EXPECT_THROW(dequantize_row(TensorType::Q4_0, buf.data(), out.data(), 33), Error);
  EXPECT_THROW(dequantize_row(TensorType::Q4_K, buf.data(), out.data(), 32), Error);
  EXPECT_NO_THROW(dequantize_row(TensorType::Q4_K, buf.data(), out.data(), 0));
}
