// matmul / get_row against a double-precision dequantize+dot reference, in every kernel variant.
//
// Tolerances. For quantized weights, matmul quantizes the activations per token in blocks of 32
// to int8 (scale d = amax/127, round to nearest even), as llama.cpp does for Q8_0. So:
//   (1) against the exact product  sum_c w_c x_c  the error is bounded by the activation rounding,
//       |err| <= sum_c |w_c| * amax(block of c) / 254, plus float slack (below);
//   (2) against the product with the activations quantized the same way in double precision, only
//       fp32 accumulation differs: |err| <= 1e-4 * sum_c |w_c x_c| + 1e-30.
// For F32/F16/BF16 weights the activations stay fp32: |err| <= 1e-4 * sum_c |w_c x_c| + 1e-30.
// (fp32 accumulation over <= 1000 terms is ~1e-6 relative; 1e-4 leaves room for any order.)
#include "kernels/matmul.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/dequantize.h"
#include "kernels/dispatch.h"
#include "kernels/fp16.h"
#include "kernels/quant_blocks.h"
#include "kernels/panel_packing.h"
#include "kernels/weight_packing.h"
#include "isa_variants.h"
#include "kvsqueeze/error.h"

using namespace kvsqueeze;
using namespace kvsqueeze::kernels;

namespace {

const TensorType kAllTypes[] = {TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q8_0,
                                TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1,
                                TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K};

bool is_float(TensorType t) { return t == TensorType::F32 || t == TensorType::F16 || t == TensorType::BF16; }

// Random but valid weight bytes: random codes, fp16 scales drawn small and finite.
std::vector<uint8_t> random_weights(TensorType t, int64_t rows, int64_t cols, std::mt19937& rng) {
  const auto layout = detail::block_layout(t);
  const size_t row_bytes = static_cast<size_t>(cols / layout.elems) * layout.bytes;
  std::vector<uint8_t> data(row_bytes * static_cast<size_t>(rows));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> byte(0, 255);
  auto put_f16 = [&](uint8_t* p, float v) {
    const uint16_t h = fp32_to_fp16(v);
    std::memcpy(p, &h, 2);
  };
  if (is_float(t)) {
    for (int64_t i = 0; i < rows * cols; ++i) {
      const float v = nd(rng) * 0.1f;
      if (t == TensorType::F32)
        std::memcpy(&data[4 * static_cast<size_t>(i)], &v, 4);
      else if (t == TensorType::F16)
        put_f16(&data[2 * static_cast<size_t>(i)], v);
      else {
        const uint16_t b = fp32_to_bf16(v);
        std::memcpy(&data[2 * static_cast<size_t>(i)], &b, 2);
      }
    }
    return data;
  }
  for (auto& b : data) b = static_cast<uint8_t>(byte(rng));
  const int64_t nblocks = static_cast<int64_t>(data.size() / layout.bytes);
  for (int64_t i = 0; i < nblocks; ++i) {
    uint8_t* b = &data[static_cast<size_t>(i) * layout.bytes];
    switch (t) {
      case TensorType::Q4_0:
      case TensorType::Q5_0:
      case TensorType::Q8_0: put_f16(b, nd(rng) * 0.01f); break;
      case TensorType::Q4_1:
      case TensorType::Q5_1:
        put_f16(b, std::fabs(nd(rng)) * 0.01f);
        put_f16(b + 2, nd(rng) * 0.1f);
        break;
      case TensorType::Q4_K:
      case TensorType::Q5_K:
        put_f16(b, std::fabs(nd(rng)) * 0.002f);
        put_f16(b + 2, std::fabs(nd(rng)) * 0.002f);
        break;
      case TensorType::Q6_K: put_f16(b + 208, nd(rng) * 0.0005f); break;
      default: break;
    }
  }
  return data;
}

std::vector<float> random_acts(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 99);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) {
    v = nd(rng);
    const int p = pick(rng);
    if (p == 0)
      v *= 50.0f;  // outliers
    else if (p == 1)
      v = 0.0f;
  }
  // an all-zero block now and then
  if (n >= 64) std::fill(x.begin() + 32, x.begin() + 64, 0.0f);
  return x;
}

// Same activation quantization as the kernels, in exact arithmetic afterwards.
std::vector<double> quantized_acts(const float* x, int64_t cols) {
  std::vector<double> out(static_cast<size_t>(cols));
  for (int64_t b = 0; b < cols / 32; ++b) {
    float amax = 0.0f;
    for (int l = 0; l < 32; ++l) amax = std::max(amax, std::fabs(x[32 * b + l]));
    const float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int l = 0; l < 32; ++l) {
      const float q = std::nearbyint(x[32 * b + l] * id);
      out[static_cast<size_t>(32 * b + l)] = static_cast<double>(q) * static_cast<double>(d);
    }
  }
  return out;
}

struct Shape {
  int64_t rows, cols, tokens;
};

// With `packed`, the weights also get their load-time packed copy (kernels/weight_packing.h).
void check_case(TensorType t, const Shape& sh, bool portable, std::mt19937& rng, bool packed = false) {
  const int64_t rows = sh.rows, cols = sh.cols, T = sh.tokens;
  const auto data = random_weights(t, rows, cols, rng);
  const auto x = random_acts(T * cols, rng);
  WeightMatrix w;
  w.type = t;
  w.data = data.data();
  w.rows = rows;
  w.cols = cols;
  w.row_bytes = data.size() / static_cast<size_t>(rows);
  std::vector<uint8_t> packed_copy(packed ? data.size() : 0);
  if (packed) {
    pack_weights(w, packed_copy.data());
    w.packed = packed_copy.data();
  }
  const int64_t ldy = rows + 3;  // exercise ldy != rows
  std::vector<float> y(static_cast<size_t>(T * ldy), -777.0f);
  if (portable)
    detail::matmul_portable(w, x.data(), T, y.data(), ldy);
  else
    matmul(w, x.data(), T, y.data(), ldy);

  std::vector<float> wr(static_cast<size_t>(cols));
  const std::string where = detail::type_label(t) + " rows=" + std::to_string(rows) + " cols=" + std::to_string(cols) +
                            " tokens=" + std::to_string(T) + (portable ? " portable" : "") + (packed ? " packed" : "");
  int failures = 0;
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(t, data.data() + static_cast<size_t>(r) * w.row_bytes, wr.data(), cols);
    for (int64_t tk = 0; tk < T; ++tk) {
      const float* xt = x.data() + tk * cols;
      double exact = 0, absdot = 0, qbound = 0;
      for (int64_t c = 0; c < cols; ++c) {
        exact += static_cast<double>(wr[static_cast<size_t>(c)]) * xt[c];
        absdot += std::fabs(static_cast<double>(wr[static_cast<size_t>(c)]) * xt[c]);
      }
      const double got = y[static_cast<size_t>(tk * ldy + r)];
      double tol_exact = 1e-4 * absdot + 1e-30;
      if (!is_float(t)) {
        const auto xq = quantized_acts(xt, cols);
        double qdot = 0;
        for (int64_t b = 0; b < cols / 32; ++b) {
          double amax = 0;
          for (int l = 0; l < 32; ++l) amax = std::max(amax, std::fabs(static_cast<double>(xt[32 * b + l])));
          for (int l = 0; l < 32; ++l) {
            const size_t c = static_cast<size_t>(32 * b + l);
            qdot += static_cast<double>(wr[c]) * xq[c];
            qbound += std::fabs(static_cast<double>(wr[c])) * amax / 254.0;
          }
        }
        const double tol_q = 1e-4 * absdot + 1e-30;
        if (std::fabs(got - qdot) > tol_q && ++failures <= 5)
          ADD_FAILURE() << where << " r=" << r << " t=" << tk << ": got " << got << ", quantized-activation ref "
                        << qdot << " (tol " << tol_q << ")";
        tol_exact += qbound * 1.0001;
      }
      if (std::fabs(got - exact) > tol_exact && ++failures <= 5)
        ADD_FAILURE() << where << " r=" << r << " t=" << tk << ": got " << got << ", exact " << exact << " (tol "
                      << tol_exact << ")";
    }
  }
  // ldy padding untouched
  for (int64_t tk = 0; tk < T; ++tk)
    for (int64_t r = rows; r < ldy; ++r)
      if (y[static_cast<size_t>(tk * ldy + r)] != -777.0f && ++failures <= 5)
        ADD_FAILURE() << where << ": wrote outside the rows at t=" << tk << " r=" << r;
  EXPECT_EQ(failures, 0) << where;
}

std::vector<int64_t> cols_for(TensorType t) {
  if (is_float(t)) return {17, 96, 256, 771};
  if (detail::block_layout(t).elems == 32) return {32, 96, 256, 544};
  return {256, 768};
}

class MatmulTest : public isa_variants::TestWith<TensorType> {};

TEST_P(MatmulTest, MatchesReferenceAcrossShapes) {
  const TensorType t = param();
  std::mt19937 rng(1234u + static_cast<unsigned>(t));
  for (int64_t cols : cols_for(t))
    for (int64_t rows : {1, 7, 33})
      for (int64_t tokens : {1, 2, 5, 64, 300}) {
        if (cols > 300 && tokens == 300 && rows == 33) continue;  // keep the suite fast
        check_case(t, {rows, cols, tokens}, false, rng);
      }
}

TEST_P(MatmulTest, ThreadedAndPanelGroups) {
  // Enough work to use every thread; 70 rows = 4 full panels + a partial one.
  const TensorType t = param();
  std::mt19937 rng(99u + static_cast<unsigned>(t));
  const int64_t cols = detail::block_layout(t).elems == 256 ? 512 : 384;
  const int saved = omp_get_max_threads();
  for (int nth : {1, 2, 3}) {
    omp_set_num_threads(nth);
    for (int64_t tokens : {1, 3, 8, 13, 40}) check_case(t, {70, cols, tokens}, false, rng);
  }
  omp_set_num_threads(saved);
}

TEST_P(MatmulTest, EachTokensNumbersDependOnlyOnItsPath) {
  // What batched serving stands on (kernels::MatmulPath): through the row path every token gets,
  // to the bit, what a one-token call gives it, however many tokens share the call; through the
  // panels every token gets what any other panel call holding it gives. So a server step of N decode
  // tokens plus a prompt chunk reproduces each sequence's own pass. Packed rows too where they exist.
  const TensorType t = param();
  std::mt19937 rng(4321u + static_cast<unsigned>(t));
  const int64_t cols = is_float(t) ? 96 : detail::block_layout(t).elems == 256 ? 512 : 896, rows = 70;
  const auto data = random_weights(t, rows, cols, rng);
  WeightMatrix plain{t, data.data(), rows, cols, data.size() / rows};
  std::vector<uint8_t> packed_copy;
  std::vector<WeightMatrix> forms{plain};
  std::vector<uint8_t> panel_copy;
  if (packable(t)) {
    packed_copy.resize(data.size());
    pack_weights(plain, packed_copy.data());
    forms.push_back(plain);
    forms.back().packed = packed_copy.data();
  }
  if (panel_packable(t)) {
    panel_copy.resize(panel_packed_bytes(plain));
    pack_panels(plain, panel_copy.data());
    forms.push_back(plain);
    forms.back().panels = panel_copy.data();
  }
  const int saved = omp_get_max_threads();
  omp_set_num_threads(2);
  for (const WeightMatrix& w : forms)
    for (int64_t tokens : {2, 3, 5, 8, 13, 20, 40}) {
      const std::string where = detail::type_label(t) + (w.packed ? " packed" : w.panels ? " panels" : "") +
                                " tokens=" + std::to_string(tokens);
      const auto x = random_acts(tokens * cols, rng);
      std::vector<float> all(static_cast<size_t>(tokens * rows)), part(all.size()), alone(static_cast<size_t>(rows));
      matmul(w, x.data(), tokens, all.data(), rows, MatmulPath::Rows);
      for (int64_t tk = 0; tk < tokens; ++tk) {
        matmul(w, x.data() + tk * cols, 1, alone.data());
        EXPECT_EQ(0, std::memcmp(alone.data(), all.data() + tk * rows, alone.size() * sizeof(float))) << where << " row path t=" << tk;
      }
      matmul(w, x.data(), tokens, all.data(), rows, MatmulPath::Panels);
      for (int64_t first : {tokens / 2, tokens - 1}) {  // a later chunk of the same tokens, down to one
        matmul(w, x.data() + first * cols, tokens - first, part.data(), rows, MatmulPath::Panels);
        EXPECT_EQ(0, std::memcmp(part.data(), all.data() + first * rows, static_cast<size_t>((tokens - first) * rows) * sizeof(float)))
            << where << " panels from t=" << first;
      }
    }
  omp_set_num_threads(saved);
}

TEST(MatmulAmx, TilesGiveTheVnniPanelsNumbersBitForBit) {
  // The AMX variant's tiles do the VNNI panel kernels' integer dots and fp32 steps in the same
  // order (kernels/matmul_amx.h): same results to the bit, so switching the variant changes no answer.
  namespace k = kvsqueeze::kernels;
  if (!k::isa_runs(Isa::Amx) || !k::isa_runs(Isa::Avx512)) GTEST_SKIP() << "this CPU has no AMX-INT8";
  for (TensorType t : kAllTypes) {
    if (is_float(t)) continue;
    std::mt19937 rng(31u + static_cast<unsigned>(t));
    const int64_t cols = detail::block_layout(t).elems == 256 ? 512 : 384;
    for (int64_t rows : {7, 70}) {
      const auto data = random_weights(t, rows, cols, rng);
      const WeightMatrix w{t, data.data(), rows, cols, data.size() / static_cast<size_t>(rows)};
      for (int64_t tokens : {16, 17, 40, 300}) {
        const auto x = random_acts(tokens * cols, rng);
        std::vector<float> amx(static_cast<size_t>(tokens * rows)), vnni(amx.size());
        k::force_isa(Isa::Amx);
        matmul(w, x.data(), tokens, amx.data(), rows);
        k::force_isa(Isa::Avx512);
        matmul(w, x.data(), tokens, vnni.data(), rows);
        k::reset_isa();
        EXPECT_EQ(0, std::memcmp(amx.data(), vnni.data(), amx.size() * sizeof(float)))
            << detail::type_label(t) << " rows=" << rows << " tokens=" << tokens;
      }
    }
  }
}

TEST_P(MatmulTest, PortablePathMatches) {
  const TensorType t = param();
  std::mt19937 rng(7u + static_cast<unsigned>(t));
  for (int64_t cols : cols_for(t))
    for (int64_t tokens : {1, 5, 12}) check_case(t, {9, cols, tokens}, true, rng);
}

TEST_P(MatmulTest, GetRowEqualsDequantizeRow) {
  const TensorType t = param();
  std::mt19937 rng(5u + static_cast<unsigned>(t));
  const int64_t rows = 5, cols = cols_for(t).back();
  const auto data = random_weights(t, rows, cols, rng);
  WeightMatrix w{t, data.data(), rows, cols, data.size() / rows};
  std::vector<float> a(static_cast<size_t>(cols)), b(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    get_row(w, r, a.data());
    dequantize_row(t, data.data() + static_cast<size_t>(r) * w.row_bytes, b.data(), cols);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << detail::type_label(t) << " row " << r;
  }
  EXPECT_THROW(get_row(w, rows, a.data()), Error);
  EXPECT_THROW(get_row(w, -1, a.data()), Error);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MatmulTest,
                         ::testing::Combine(::testing::ValuesIn(kAllTypes), ::testing::ValuesIn(isa_variants::all())),
                         isa_variants::name_with<TensorType>(detail::type_label));

class Matmul : public isa_variants::Test {};

TEST_P(Matmul, RejectsUnsupportedAndMalformed) {
  std::vector<uint8_t> buf(4096);
  std::vector<float> x(256), y(16);
  for (auto t : {TensorType::Q2_K, TensorType::Q3_K, TensorType::Q8_K, TensorType::Q8_1}) {
    WeightMatrix w{t, buf.data(), 1, 256, 512};
    try {
      matmul(w, x.data(), 1, y.data());
      ADD_FAILURE() << "no throw for " << detail::type_label(t);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(detail::type_label(t)), std::string::npos) << e.what();
    }
    EXPECT_THROW(get_row(w, 0, y.data()), Error);
  }
  WeightMatrix bad_cols{TensorType::Q4_0, buf.data(), 1, 40, 1024};
  EXPECT_THROW(matmul(bad_cols, x.data(), 1, y.data()), Error);
  WeightMatrix short_rows{TensorType::Q4_0, buf.data(), 2, 64, 20};
  EXPECT_THROW(matmul(short_rows, x.data(), 1, y.data()), Error);
}

TEST_P(Matmul, ZeroTokensAndEmptyMatrices) {
  std::vector<uint8_t> buf(4096, 0);
  std::vector<float> x(64, 1.0f), y(8, 5.0f);
  WeightMatrix w{TensorType::Q8_0, buf.data(), 4, 64, 68};
  matmul(w, x.data(), 0, y.data());
  EXPECT_EQ(y[0], 5.0f);
  WeightMatrix nocols{TensorType::F32, buf.data(), 4, 0, 0};
  matmul(nocols, x.data(), 2, y.data());
  for (int i = 0; i < 8; ++i) EXPECT_EQ(y[static_cast<size_t>(i)], 0.0f);
}

const TensorType kPackable[] = {TensorType::Q4_0, TensorType::Q5_0, TensorType::Q8_0};
// Block counts that leave the last group of 16 full, partial, odd and alone (896 = Qwen's width).
const int64_t kPackedCols[] = {32, 96, 544, 896, 1056};

TEST_P(Matmul, PackedRowsHoldTheSameWeights) {
  std::mt19937 rng(77u);
  for (TensorType t : kPackable)
    for (int64_t cols : kPackedCols) {
      const int64_t rows = 3;
      const auto data = random_weights(t, rows, cols, rng);
      const WeightMatrix w{t, data.data(), rows, cols, data.size() / rows};
      std::vector<uint8_t> packed(data.size());
      pack_weights(w, packed.data());
      std::vector<float> ref(static_cast<size_t>(cols));
      for (int64_t r = 0; r < rows; ++r) {
        dequantize_row(t, data.data() + static_cast<size_t>(r) * w.row_bytes, ref.data(), cols);
        for (int64_t e = 0; e < cols; ++e)
          ASSERT_EQ(ref[static_cast<size_t>(e)], packed_weight(t, packed.data() + static_cast<size_t>(r) * w.row_bytes, cols, e))
              << detail::type_label(t) << " cols=" << cols << " r=" << r << " e=" << e;
      }
    }
  const std::vector<uint8_t> q4k(144);
  EXPECT_THROW(pack_weights(WeightMatrix{TensorType::Q4_K, q4k.data(), 1, 256, 144}, std::vector<uint8_t>(144).data()), Error);
}

const TensorType kPanelTypes[] = {TensorType::Q4_0, TensorType::Q5_0, TensorType::Q8_0, TensorType::Q4_K,
                                   TensorType::Q6_K};
std::vector<int64_t> panel_cols(TensorType t) {
  if (t == TensorType::Q4_K || t == TensorType::Q6_K) return {256, 768, 4864};
  return {32, 96, 896};
}

TEST_P(Matmul, PanelsHoldTheSameWeights) {
  // Rows that fill panels of 16, leave the last one partial, or make one alone.
  std::mt19937 rng(80u);
  for (TensorType t : kPanelTypes)
    for (int64_t rows : {1, 16, 21})
      for (int64_t cols : panel_cols(t)) {
        const auto data = random_weights(t, rows, cols, rng);
        const WeightMatrix w{t, data.data(), rows, cols, data.size() / rows};
        std::vector<uint8_t> panels(panel_packed_bytes(w));
        pack_panels(w, panels.data());
        std::vector<float> ref(static_cast<size_t>(cols));
        for (int64_t r = 0; r < rows; ++r) {
          dequantize_row(t, data.data() + static_cast<size_t>(r) * w.row_bytes, ref.data(), cols);
          for (int64_t e = 0; e < cols; ++e)
            ASSERT_EQ(ref[static_cast<size_t>(e)], panel_weight(t, panels.data(), cols, r, e))
                << detail::type_label(t) << " rows=" << rows << " cols=" << cols << " r=" << r << " e=" << e;
        }
      }
  const std::vector<uint8_t> q5k(176);
  EXPECT_THROW(pack_panels(WeightMatrix{TensorType::Q5_K, q5k.data(), 1, 256, 176}, std::vector<uint8_t>(176).data()), Error);
}

TEST_P(Matmul, PanelCopiesGiveTheUnpackedPanelsNumbersBitForBit) {
  // The panel kernel does the unpacked panels' integer dots and float steps in their order: the
  // same numbers for every token count, one token included (decode and prompts share them).
  std::mt19937 rng(81u);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(2);
  for (TensorType t : kPanelTypes)
    for (int64_t rows : {21, 70})
      for (int64_t cols : panel_cols(t)) {
        if (cols == 32) continue;
        const auto data = random_weights(t, rows, cols, rng);
        const WeightMatrix plain{t, data.data(), rows, cols, data.size() / rows};
        std::vector<uint8_t> copy(panel_packed_bytes(plain));
        pack_panels(plain, copy.data());
        WeightMatrix w = plain;
        w.panels = copy.data();
        for (int64_t tokens : {1, 2, 5, 8, 13, 40}) {
          const auto x = random_acts(tokens * cols, rng);
          std::vector<float> got(static_cast<size_t>(tokens * rows)), want(got.size());
          matmul(w, x.data(), tokens, got.data(), rows, MatmulPath::ByCount);
          matmul(plain, x.data(), tokens, want.data(), rows, MatmulPath::Panels);
          EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float)))
              << detail::type_label(t) << " rows=" << rows << " cols=" << cols << " tokens=" << tokens;
        }
      }
  omp_set_num_threads(saved);
}

TEST_P(Matmul, PackedRowsMatchReference) {
  std::mt19937 rng(78u);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(2);
  for (TensorType t : kPackable)
    for (int64_t cols : kPackedCols)
      for (int64_t rows : {1, 7, 70})
        for (int64_t tokens : {1, 2, 3, 4, 5, 8, 13, 16, 17, 40}) check_case(t, {rows, cols, tokens}, false, rng, true);
  omp_set_num_threads(saved);
}

TEST_P(Matmul, PackedRowsGiveEachTokenItsOwnResultAndThePanelsTheirs) {
  // Below the panel threshold (8 tokens) every token's result is what it gets alone, to the bit (a
  // server's decode step of N sequences = N solo decodes); from it on, the packed rows unpack to
  // exactly the GGUF rows' codes and scales, so the panels give the unpacked weights' numbers.
  std::mt19937 rng(79u);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(2);
  for (TensorType t : kPackable)
    for (int64_t cols : {96, 896, 1056}) {
      const int64_t rows = 70;
      const auto data = random_weights(t, rows, cols, rng);
      WeightMatrix plain{t, data.data(), rows, cols, data.size() / rows};
      std::vector<uint8_t> packed(data.size());
      pack_weights(plain, packed.data());
      WeightMatrix w = plain;
      w.packed = packed.data();
      for (int64_t tokens : {2, 3, 5, 7, 8, 15, 16, 40}) {
        const auto x = random_acts(tokens * cols, rng);
        std::vector<float> y(static_cast<size_t>(tokens * rows)), alone(static_cast<size_t>(rows)), unpacked(y.size());
        matmul(w, x.data(), tokens, y.data());
        const std::string where = detail::type_label(t) + " cols=" + std::to_string(cols) + " tokens=" + std::to_string(tokens);
        if (tokens < 8) {
          for (int64_t tk = 0; tk < tokens; ++tk) {
            matmul(w, x.data() + tk * cols, 1, alone.data());
            EXPECT_EQ(0, std::memcmp(alone.data(), y.data() + tk * rows, alone.size() * sizeof(float))) << where << " t=" << tk;
          }
        } else {
          matmul(plain, x.data(), tokens, unpacked.data());
          EXPECT_EQ(0, std::memcmp(unpacked.data(), y.data(), y.size() * sizeof(float))) << where;
        }
      }
    }
  omp_set_num_threads(saved);
}

INSTANTIATE_TEST_SUITE_P(Variants, Matmul, ::testing::ValuesIn(isa_variants::all()), isa_variants::name);

}  // namespace
