// qfilter: learned filters read from a user-given safetensors file; scores -f.k with the
// llama channel permutation; every malformed file is one clear error.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"
#include "kvsqueeze/session.h"
#include "safetensors_writer.h"
#include "test_paths.h"

using namespace kvsqueeze;

namespace {

std::vector<float> filters_for_stories() {
  std::vector<float> f(5 * 4 * 8);
  for (size_t i = 0; i < f.size(); ++i) f[i] = static_cast<float>((static_cast<int>(i * 37 % 17) - 8)) / 8.0f;
  return f;
}

}  // namespace

TEST(QFilter, ScoresAreMinusFilterDotKeyInTheEngineChannelOrder) {
  const auto f = filters_for_stories();
  const std::string path = test_safetensors::write("ok", "q_filters", {5, 4, 8}, f);
  auto model = Model::load(test_paths::stories260k());
  auto press = make_press("qfilter", {"file=" + path});
  SessionOptions o;
  o.kv_type_k = o.kv_type_v = KvType::F32;
  o.threads = 1;
  Session s(*model, o);
  std::vector<LayerScores> scores(5);
  std::vector<std::vector<float>> keys(5);
  s.set_layer_hook([&](const LayerStats& st, KvCache& cache) {
    const LayerView view(*model, st.layer, cache, st);
    scores[static_cast<size_t>(st.layer)] = press->score(view);
    keys[static_cast<size_t>(st.layer)] = view.keys(2);
  });
  s.eval(model->tokenizer().encode("Once upon a time there was a girl", true));
  for (int64_t l = 0; l < 5; ++l) {
    const auto& k = keys[static_cast<size_t>(l)];
    const auto n = static_cast<int64_t>(k.size() / 8);
    for (int64_t j = 0; j < n; ++j) {
      double want = 0;  // stories is llama: engine channel 2i+s is Hugging Face channel s*4+i
      for (int64_t c = 0; c < 8; ++c) want -= f[static_cast<size_t>((l * 4 + 2) * 8 + (c % 2) * 4 + c / 2)] * k[static_cast<size_t>(j * 8 + c)];
      EXPECT_NEAR(scores[static_cast<size_t>(l)][2][static_cast<size_t>(j)], want, 1e-5);
    }
  }
  // BF16 files work too; the CLI compresses with it.
  const std::string bf16 = test_safetensors::write("bf16", "q_filters", {5, 4, 8}, f, "BF16");
  EXPECT_NO_THROW(make_press("qfilter", {"file=" + bf16}));
}

TEST(QFilter, BadFilesAreOneLineErrors) {
  const auto f = filters_for_stories();
  EXPECT_THROW(make_press("qfilter"), Error);  // no file
  EXPECT_THROW(make_press("qfilter", {"file=/nonexistent/q.safetensors"}), Error);
  EXPECT_THROW(make_press("qfilter", {"file=" + test_safetensors::write("name", "other", {5, 4, 8}, f)}), Error);
  EXPECT_THROW(make_press("qfilter", {"file=" + test_safetensors::write("cut", "q_filters", {5, 4, 8}, f, "F32", 7)}), Error);
  EXPECT_THROW(make_press("qfilter", {"file=" + test_safetensors::write("i8", "q_filters", {5, 4, 8}, f, "I8")}), Error);
  // A shape that does not fit the model fails when the press meets it.
  auto model = Model::load(test_paths::stories260k());
  auto press = make_press("qfilter", {"file=" + test_safetensors::write("shape", "q_filters", {4, 4, 10}, std::vector<float>(160))});
  SessionOptions o;
  o.threads = 1;
  Session s(*model, o);
  EXPECT_THROW(prefill_with_press(s, {1, 2, 3, 4, 5, 6}, *press, Budget{0.5}, 0), Error);
  // Garbage headers.
  const std::string junk = test_paths::scratch_dir() + "/qfilter-junk" + test_paths::process_tag() + ".safetensors";
  for (const std::string& bytes : {std::string("abc"), std::string("\x10\0\0\0\0\0\0\0{not json}xxxxxx", 24),
                                   std::string("\xff\xff\xff\xff\xff\xff\xff\x7f{}", 10)}) {
    std::ofstream(junk, std::ios::binary) << bytes;
    try {
      make_press("qfilter", {"file=" + junk});
      ADD_FAILURE() << "accepted junk";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  }
}
