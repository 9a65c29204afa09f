// The prompt cache: a saved and reloaded KV cache continues bit-identically (compressed or
// not, every element type), and every bad file (another model, truncated, corrupt, another
// version) is one clear kvsqueeze::Error, never a crash.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "cache/hash64.h"
#include "cli_runner.h"
#include "fixture_models.h"
#include "kernels/kv_rows.h"
#include "kv_bytes_formula.h"
#include "kvsqueeze/cache_file.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/session.h"
#include "test_paths.h"

using namespace kvsqueeze;

namespace {

const std::vector<int32_t> kPrompt = {1, 403, 407, 261, 378, 300, 290, 411, 322, 265, 282, 295, 433, 426, 385,
                                      328, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396};
const std::vector<int32_t> kMore = {267, 337, 410, 408, 419, 292};

std::string scratch(const std::string& name) { return test_paths::scratch_dir() + "/" + test_paths::process_tag() + "-" + name; }

std::vector<uint8_t> read_bytes(const std::string& path) {
  const std::string s = slurp(path);
  return {s.begin(), s.end()};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Drops a random subset of each run's slots (always a different count per head), leaving
// one run empty and one complete: a ragged, "compressed" cache.
void compact_randomly(KvCache& cache, uint32_t seed) {
  std::mt19937 rng(seed);
  const auto& s = cache.shape();
  for (int64_t l = 0; l < s.n_layer; ++l)
    for (int64_t h = 0; h < s.n_head_kv; ++h) {
      const int64_t len = cache.length(l, h);
      std::vector<int32_t> keep;
      const bool all = l == 0 && h == 0, none = l == s.n_layer - 1 && h == s.n_head_kv - 1 && (l | h) != 0;
      for (int32_t i = 0; i < len; ++i)
        if (all || (!none && std::uniform_real_distribution<double>(0, 1)(rng) < 0.6)) keep.push_back(i);
      cache.compact(l, h, keep);
    }
}

size_t used_bytes_of(const KvCache& c) { return test_bytes::cache_bytes(c); }

void expect_same_cache(const KvCache& a, const KvCache& b) {
  ASSERT_EQ(a.lengths(), b.lengths());
  for (int64_t l = 0; l < a.shape().n_layer; ++l)
    for (int64_t h = 0; h < a.shape().n_head_kv; ++h) {
      const auto pa = a.positions(l, h), pb = b.positions(l, h);
      ASSERT_TRUE(std::equal(pa.begin(), pa.end(), pb.begin(), pb.end())) << "layer " << l << " head " << h;
      // Attention would not notice a lost key offset (softmax ignores it); the readers would.
      const auto oa = a.key_offset(l, h), ob = b.key_offset(l, h);
      ASSERT_TRUE(std::equal(oa.begin(), oa.end(), ob.begin(), ob.end())) << "key offset of layer " << l << " head " << h;
      const KvRun ra = a.run(l, h), rb = b.run(l, h);
      ASSERT_EQ(ra.recent_first, rb.recent_first);
      const auto rows = static_cast<size_t>(std::min(ra.len, ra.recent_first));  // KIVI2: the rest waits in f16
      if (ra.len == 0) continue;
      ASSERT_EQ(std::memcmp(ra.k, rb.k, rows * a.k_row_bytes(l, h)), 0) << "K of layer " << l << " head " << h;
      ASSERT_EQ(std::memcmp(ra.v, rb.v, rows * a.v_row_bytes()), 0) << "V of layer " << l << " head " << h;
      // Every slot as stored, KIVI2 groups and the recent window included.
      std::vector<float> ka(static_cast<size_t>(ra.k_stride)), kb(ka.size()), va(static_cast<size_t>(ra.v_stride)), vb(va.size());
      for (int64_t j = 0; j < ra.len; ++j) {
        kernels::stored_key_row(ra, j, ka.data());
        kernels::stored_key_row(rb, j, kb.data());
        kernels::stored_value_row(ra, j, va.data());
        kernels::stored_value_row(rb, j, vb.data());
        ASSERT_EQ(ka, kb) << "key " << j << " of layer " << l << " head " << h;
        ASSERT_EQ(va, vb) << "value " << j << " of layer " << l << " head " << h;
      }
    }
}

// Saves `original` (which has evaluated `tokens`), loads it into a fresh session and checks
// that both continue with bit-identical logits.
void round_trip(const Model& model, Session& original, const std::vector<int32_t>& tokens, const std::vector<int32_t>& more,
                const std::string& name) {
  const std::string path = scratch(name);
  save_cache(original, tokens, path, R"({"press":"test","ratio":0.25})");
  SessionOptions o = original.options();
  Session loaded(model, o);
  const LoadedCache lc = load_cache(loaded, path);
  EXPECT_EQ(lc.tokens, tokens);
  EXPECT_EQ(nlohmann::json::parse(lc.meta_json).at("press"), "test");
  EXPECT_EQ(loaded.next_position(), original.next_position());
  expect_same_cache(original.cache(), loaded.cache());
  EXPECT_EQ(loaded.cache().bytes_used(), original.cache().bytes_used());
  // Loaded compressed: nothing allocated beyond the saved lengths.
  EXPECT_EQ(loaded.cache().bytes_held(), used_bytes_of(loaded.cache()));
  EXPECT_EQ(loaded.last_logits(), original.last_logits());
  for (int32_t id : more) {
    const std::vector<float> a = original.eval({id});
    const std::vector<float> b = loaded.eval({id});
    ASSERT_EQ(a, b) << "logits differ after token " << id;
  }
  expect_same_cache(original.cache(), loaded.cache());
  std::filesystem::remove(path);
}

std::string synthetic_model(const std::string& fixture) {
  std::string why;
  return fixture_models::test_model_path(fixture, &why);
}

}  // namespace

TEST(CacheFile, Hash64IsXxh64) {
  EXPECT_EQ(Hash64::of("", 0), 0xef46db3751d8e999ULL);
  std::vector<uint8_t> d(1000);
  for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<uint8_t>(i * 7 + 3);
  EXPECT_EQ(Hash64::of(d.data(), 100), 0xa61f8d4c170fe531ULL);
  Hash64 streamed;
  for (size_t at = 0, step = 1; at < d.size(); at += step, step = step * 2 + 1) streamed.update(d.data() + at, std::min(step, d.size() - at));
  EXPECT_EQ(streamed.digest(), 0x5f235fa033f1a3fbULL);
}

TEST(CacheFile, FingerprintIsStableAndDistinguishesModels) {
  auto a = Model::load(test_paths::stories260k());
  auto b = Model::load(test_paths::stories260k());
  EXPECT_EQ(a->fingerprint(), b->fingerprint());
  EXPECT_NE(a->fingerprint(), 0u);
  auto synth = Model::load(synthetic_model("synth_llama_f32"));
  EXPECT_NE(a->fingerprint(), synth->fingerprint());
}

TEST(CacheFile, RoundTripIsBitIdentical) {
  auto model = Model::load(test_paths::stories260k());
  for (KvType type : {KvType::F32, KvType::F16, KvType::BF16}) {
    SCOPED_TRACE(kv_type_name(type));
    Session s(*model, {.chunk = 7, .kv_type_k = type, .kv_type_v = type});
    s.eval(kPrompt);
    round_trip(*model, s, kPrompt, kMore, std::string("plain-") + kv_type_name(type) + ".kvc");
  }
}

TEST(CacheFile, CompressedRoundTripStaysCompressed) {
  auto model = Model::load(test_paths::stories260k());
  for (KvType type : {KvType::F32, KvType::F16}) {
    SCOPED_TRACE(kv_type_name(type));
    Session s(*model, {.kv_type_k = type, .kv_type_v = type});
    s.eval(kPrompt);
    compact_randomly(s.cache(), 7);
    s.cache().release_slack(0);
    const size_t full = kPrompt.size() * static_cast<size_t>(model->config().n_layer * model->config().n_head_kv) *
                        (s.cache().k_row_bytes() + s.cache().v_row_bytes() + 4);
    ASSERT_LT(s.cache().bytes_used(), full);
    round_trip(*model, s, kPrompt, kMore, std::string("ragged-") + kv_type_name(type) + ".kvc");
  }
}

TEST(CacheFile, QuantizedRotatedAndCentredCachesRoundTrip) {
  auto model = Model::load(synthetic_model("synth_qwen2_f32"));  // head size 64: whole q8_0/q4_0 blocks
  struct Types {
    KvType k, v;
    KvTransform rotation, centering;
  };
  for (const Types& t : {Types{KvType::Q8_0, KvType::Q8_0, KvTransform::Auto, KvTransform::Auto},
                         Types{KvType::Q4_0, KvType::F16, KvTransform::Off, KvTransform::On},
                         Types{KvType::BF16, KvType::Q4_0, KvTransform::On, KvTransform::Off},
                         Types{KvType::KIVI2, KvType::KIVI2, KvTransform::Auto, KvTransform::Auto},
                         Types{KvType::KIVI2, KvType::F16, KvTransform::Off, KvTransform::Off},
                         Types{KvType::Q8_0, KvType::KIVI2, KvTransform::Auto, KvTransform::Off}}) {
    std::string label = kv_types_label(t.k, t.v) + "-" + kv_transform_name(t.rotation) + "-" + kv_transform_name(t.centering);
    std::replace(label.begin(), label.end(), '/', '_');  // a file name
    SCOPED_TRACE(label);
    SessionOptions o;
    o.kv_type_k = t.k;
    o.kv_type_v = t.v;
    o.kv_rotation = t.rotation;
    o.kv_centering = t.centering;
    o.chunk = 6;
    Session s(*model, o);
    const int32_t vocab = static_cast<int32_t>(model->config().n_vocab);  // stories260K's ids, folded into this vocabulary
    std::vector<int32_t> prompt, more = kMore;  // 90 tokens: KIVI2 runs hold whole groups and a window
    for (int i = 0; i < 3; ++i) prompt.insert(prompt.end(), kPrompt.begin(), kPrompt.end());
    for (auto* ids : {&prompt, &more})
      for (int32_t& id : *ids) id %= vocab;
    s.eval(prompt);
    EXPECT_EQ(s.cache().key_offset(0, 0).empty(), !kv_keys_centered(t.centering, t.k));
    compact_randomly(s.cache(), 3);
    s.cache().release_slack(0);
    const std::string path = scratch("typed-" + label + "-header.kvc");
    save_cache(s, prompt, path);
    const CacheFileInfo info = read_cache_info(path);
    EXPECT_EQ(info.version, t.k == KvType::KIVI2 || t.v == KvType::KIVI2 ? 4u : 3u);
    EXPECT_EQ(info.shape.k_type, t.k);
    EXPECT_EQ(info.shape.v_type, t.v);
    // A session with other types, rotation or centring refuses the file with one clear error.
    SessionOptions other = o;
    other.kv_centering = kv_keys_centered(t.centering, t.k) ? KvTransform::Off : KvTransform::On;
    Session mismatch(*model, other);
    EXPECT_NE(error_of([&] { load_cache(mismatch, path); }).find("kv_centering"), std::string::npos);
    std::filesystem::remove(path);
    round_trip(*model, s, prompt, more, "typed-" + label + ".kvc");
  }
}

TEST(CacheFile, SlidingWindowModelRoundTrip) {
  auto model = Model::load(synthetic_model("synth_gemma3_f32"));
  ASSERT_GT(model->config().sliding_window, 0);
  Session s(*model, {.chunk = 5, .kv_type_k = KvType::F32, .kv_type_v = KvType::F32});
  std::vector<int32_t> prompt;
  for (int i = 0; i < 3; ++i) prompt.insert(prompt.end(), kPrompt.begin(), kPrompt.end());
  s.eval(prompt);
  const auto& sliding = model->config().layer_sliding;
  const int64_t layer = std::find(sliding.begin(), sliding.end(), true) - sliding.begin();
  ASSERT_LT(s.cache().length(layer, 0), static_cast<int64_t>(prompt.size()));  // the window trimmed it
  const std::vector<int32_t> more = {kPrompt.begin(), kPrompt.begin() + 12};
  round_trip(*model, s, prompt, more, "sliding.kvc");
}

TEST(CacheFile, RollbackAfterLoadMatches) {
  auto model = Model::load(test_paths::stories260k());
  Session s(*model, {});
  s.eval(kPrompt);
  const std::string path = scratch("rollback.kvc");
  save_cache(s, kPrompt, path);
  Session t(*model, {});
  load_cache(t, path);
  const auto a = s.eval(kMore);
  s.rollback_to(static_cast<int32_t>(kPrompt.size()));
  EXPECT_TRUE(s.last_logits().empty());  // they belonged to a rolled-back token
  EXPECT_EQ(t.eval(kMore), a);
  std::filesystem::remove(path);
}

TEST(CacheFile, OtherModelIsAnErrorAndLeavesTheSessionAlone) {
  auto stories = Model::load(test_paths::stories260k());
  auto synth = Model::load(synthetic_model("synth_llama_f32"));
  Session s(*stories, {});
  s.eval(kPrompt);
  const std::string path = scratch("other-model.kvc");
  save_cache(s, kPrompt, path);
  Session t(*synth, {});
  t.eval({1, 2, 3});
  const auto before = t.cache().lengths();
  const std::string err = error_of([&] { load_cache(t, path); });
  EXPECT_NE(err.find("cache file '" + path + "' was made for model '"), std::string::npos) << err;
  EXPECT_NE(err.find("fingerprint " + fingerprint_hex(stories->fingerprint())), std::string::npos) << err;
  EXPECT_NE(err.find(fingerprint_hex(synth->fingerprint())), std::string::npos) << err;
  EXPECT_EQ(err.find('\n'), std::string::npos);
  EXPECT_EQ(t.next_position(), 3);
  EXPECT_EQ(t.cache().lengths(), before);
  std::filesystem::remove(path);
}

TEST(CacheFile, SessionMismatchesAreErrors) {
  auto model = Model::load(test_paths::stories260k());
  const SessionOptions f32{.kv_type_k = KvType::F32, .kv_type_v = KvType::F32};
  Session s(*model, f32);
  s.eval(kPrompt);
  const std::string path = scratch("mismatch.kvc");
  save_cache(s, kPrompt, path);
  Session f16(*model, {});
  EXPECT_NE(error_of([&] { load_cache(f16, path); }).find("holds a KV cache of type f32 but the session uses f16"), std::string::npos);
  SessionOptions small = f32;
  small.ctx_size = 8;
  Session tiny(*model, small);
  EXPECT_NE(error_of([&] { load_cache(tiny, path); }).find("more than the context size 8"), std::string::npos);
  EXPECT_EQ(read_cache_info(path).shape.k_type, KvType::F32);
  EXPECT_EQ(read_cache_info(path).shape.v_type, KvType::F32);
  // Saving needs one token id per position, valid JSON metadata and a writable place.
  EXPECT_NE(error_of([&] { save_cache(s, {1, 2}, scratch("x.kvc")); }).find("2 token ids given for a session at position 30"),
            std::string::npos);
  EXPECT_NE(error_of([&] { save_cache(s, kPrompt, scratch("x.kvc"), "{oops"); }).find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of([&] { save_cache(s, kPrompt, "/nonexistent-dir/x.kvc"); }).find("cannot write cache file"), std::string::npos);
  EXPECT_NE(error_of([&] { load_cache(f16, scratch("missing.kvc")); }).find("cannot open cache file"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(scratch("x.kvc")));
  std::filesystem::remove(path);
}

TEST(CacheFile, SaveReplacesAtomicallyAndLeavesNoTemporaries) {
  auto model = Model::load(test_paths::stories260k());
  Session s(*model, {});
  s.eval({kPrompt.begin(), kPrompt.begin() + 10});
  const std::string dir = test_paths::scratch_dir() + "/atomic" + test_paths::process_tag();
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/c.kvc";
  save_cache(s, {kPrompt.begin(), kPrompt.begin() + 10}, path);
  const auto first = read_bytes(path);
  EXPECT_THROW(save_cache(s, kPrompt, path), Error);  // refused before anything is written
  EXPECT_EQ(read_bytes(path), first);
  s.eval({kPrompt.begin() + 10, kPrompt.end()});
  save_cache(s, kPrompt, path);
  EXPECT_GT(read_bytes(path).size(), first.size());
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1u);
  std::filesystem::remove_all(dir);
}

TEST(CacheFile, EveryTruncationAndCorruptionIsAnError) {
  auto model = Model::load(test_paths::stories260k());
  Session s(*model, {});
  s.eval({kPrompt.begin(), kPrompt.begin() + 6});
  compact_randomly(s.cache(), 3);
  const std::string path = scratch("corrupt.kvc");
  save_cache(s, {kPrompt.begin(), kPrompt.begin() + 6}, path, R"({"press":"x"})");
  const std::vector<uint8_t> good = read_bytes(path);
  ASSERT_NO_THROW(parse_cache_file(good.data(), good.size(), "good"));

  // Exactly-sized copies, so that ASan sees any read past the end.
  auto parse = [](const std::vector<uint8_t>& bytes, bool verify) {
    std::vector<uint8_t> copy(bytes);
    return parse_cache_file(copy.data(), copy.size(), "bad.kvc", verify);
  };
  for (size_t cut = 0; cut < good.size(); cut += cut < 256 ? 1 : 17) {
    SCOPED_TRACE(cut);
    const std::vector<uint8_t> cutoff(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut));
    const std::string err = error_of([&] { parse(cutoff, true); });
    EXPECT_NE(err.find("cache file 'bad.kvc' "), std::string::npos) << err;
    EXPECT_TRUE(cut == 0 || err.find("truncated") != std::string::npos || err.find("wrong magic") != std::string::npos) << err;
    EXPECT_THROW(parse(cutoff, false), Error);
  }
  int structural = 0;
  for (size_t at = 0; at < good.size(); ++at) {
    for (uint8_t flip : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xff}}) {
      std::vector<uint8_t> bad = good;
      bad[at] ^= flip;
      EXPECT_THROW(parse(bad, true), Error) << "byte " << at << " ^ " << int(flip);
      // Without the checksum, a flipped K/V byte may pass; nothing may crash.
      try {
        parse(bad, false);
      } catch (const Error&) {
        ++structural;
      }
    }
  }
  EXPECT_GT(structural, 0);
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  EXPECT_NE(error_of([&] { parse(longer, true); }).find("is corrupt"), std::string::npos);

  // The loader reports a bad file with its name, on one line, and leaves the session alone.
  std::vector<uint8_t> bad = good;
  bad[bad.size() / 2] ^= 0x10;
  write_bytes(path, bad);
  Session t(*model, {});
  const std::string err = error_of([&] { load_cache(t, path); });
  EXPECT_EQ(err, "cache file '" + path + "' is corrupt: checksum mismatch" + err.substr(err.find(" (stored")));
  EXPECT_EQ(t.next_position(), 0);
  write_bytes(path, {good.begin(), good.begin() + 100});
  EXPECT_NE(error_of([&] { load_cache(t, path); }).find("is truncated: 100 bytes, its header says"), std::string::npos);
  std::filesystem::remove(path);
}

TEST(CacheFile, UnknownVersionNamesTheSupportedOne) {
  auto model = Model::load(test_paths::stories260k());
  Session s(*model, {});
  s.eval({1, 2, 3});
  const std::string path = scratch("version.kvc");
  save_cache(s, {1, 2, 3}, path);
  auto bytes = read_bytes(path);
  bytes[8] = 5;
  write_bytes(path, bytes);
  Session t(*model, {});
  EXPECT_EQ(error_of([&] { load_cache(t, path); }),
            "cache file '" + path + "' has format version 5; this kvsqueeze reads versions 1 to 4 only");
  std::filesystem::remove(path);
}

// Structurally invalid content behind a valid checksum (a buggy or hostile writer).
TEST(CacheFile, InvalidContentWithAValidChecksumIsAnError) {
  auto model = Model::load(test_paths::stories260k());
  Session s(*model, {});
  s.eval({1, 2, 3, 4});
  const std::string path = scratch("content.kvc");
  save_cache(s, {1, 2, 3, 4}, path);
  const auto good = read_bytes(path);
  const CacheFileInfo info = parse_cache_file(good.data(), good.size(), "x");
  auto reseal = [](std::vector<uint8_t> b) {
    const uint64_t h = Hash64::of(b.data(), b.size() - 8);
    std::memcpy(b.data() + b.size() - 8, &h, 8);
    return b;
  };
  auto put_i32 = [](std::vector<uint8_t>& b, size_t at, int32_t v) { std::memcpy(b.data() + at, &v, 4); };
  auto expect_error = [&](const std::vector<uint8_t>& b, const std::string& needle) {
    const std::string err = error_of([&] { parse_cache_file(b.data(), b.size(), "x"); });
    EXPECT_NE(err.find(needle), std::string::npos) << err;
  };
  {  // positions out of order
    auto b = good;
    put_i32(b, info.runs[1].positions_offset + 4, 0);
    expect_error(reseal(b), "positions must ascend strictly");
  }
  {  // a position beyond what the cache has seen
    auto b = good;
    put_i32(b, info.runs[2].positions_offset + 12, 4);
    expect_error(reseal(b), "positions must ascend strictly within [0, 4)");
  }
  {  // a run longer than the tokens seen
    auto b = good;
    put_i32(b, info.runs[0].positions_offset - 4, 5);
    expect_error(reseal(b), "holds 5 slots but the cache covers only 4 tokens");
  }
  {  // a huge token count: refused before any allocation
    const size_t next_position_at = 20 + 8 + 4 + info.arch.size() + 4 + info.model_name.size() + 4 + 16 +
                                    4 * static_cast<size_t>(info.shape.n_layer) + 4;
    auto b = good;
    put_i32(b, next_position_at, 0x7fffffff);
    put_i32(b, next_position_at + 4, 0x7fffffff);
    expect_error(reseal(b), "token ids needs 8589934588 bytes");
  }
  {  // unknown element type
    auto b = good;
    put_i32(b, 20 + 8 + 4 + info.arch.size() + 4 + info.model_name.size(), 7);
    expect_error(reseal(b), "unknown key type 7");
  }
  std::filesystem::remove(path);
}

TEST(CacheFile, CliRoundTrip) {
  const std::string stories = test_paths::stories260k(), path = scratch("cli.kvc");
  const std::string base = "generate -m " + stories + " -p 'Once upon a time there was a little dog' -n 24 --json -t 1";
  const CliResult plain = run_cli(base);
  ASSERT_EQ(plain.status, 0) << plain.err;
  const CliResult saved = run_cli(base + " --save-cache " + path);
  ASSERT_EQ(saved.status, 0) << saved.err;
  const CliResult loaded = run_cli(base + " --load-cache " + path);
  ASSERT_EQ(loaded.status, 0) << loaded.err;
  const auto jp = nlohmann::json::parse(plain.out), js = nlohmann::json::parse(saved.out), jl = nlohmann::json::parse(loaded.out);
  EXPECT_FALSE(js.at("cache_loaded").get<bool>());
  EXPECT_TRUE(jl.at("cache_loaded").get<bool>());
  EXPECT_EQ(js.at("output_tokens"), jp.at("output_tokens"));
  EXPECT_EQ(jl.at("output_tokens"), js.at("output_tokens"));
  EXPECT_EQ(jl.at("prompt_tokens"), js.at("prompt_tokens"));
  EXPECT_EQ(jl.at("kv_bytes_used"), js.at("kv_bytes_used"));
  EXPECT_EQ(nlohmann::json::parse(read_cache_info(path).meta_json).at("press"), "none");

  // Streaming text output, too.
  const std::string text = "generate -m " + stories + " -p 'Once upon a time there was a little dog' -n 24 -t 1";
  EXPECT_EQ(run_cli(text + " --load-cache " + path).out, run_cli(text).out);

  // A different prompt: one line, non-zero, nothing on stdout.
  const CliResult wrong = run_cli("generate -m " + stories + " -p 'Once upon a time there was a big cat' -n 4 --load-cache " + path);
  EXPECT_NE(wrong.status, 0);
  EXPECT_LT(wrong.status, 128);
  EXPECT_EQ(wrong.err_lines(), 1) << wrong.err;
  EXPECT_NE(wrong.err.find("the prompt does not match the cached tokens"), std::string::npos) << wrong.err;
  EXPECT_TRUE(wrong.out.empty()) << wrong.out;

  // The cache's element type is used unless --kv-type says otherwise.
  const CliResult f32 = run_cli(base + " --kv-type f32 --load-cache " + path);
  EXPECT_NE(f32.status, 0);
  EXPECT_NE(f32.err.find("holds a KV cache of type f16 but the session uses f32"), std::string::npos) << f32.err;

  // A corrupt file: one line naming it.
  auto bytes = read_bytes(path);
  bytes[bytes.size() - 100] ^= 1;
  write_bytes(path, bytes);
  const CliResult corrupt = run_cli(base + " --load-cache " + path);
  EXPECT_NE(corrupt.status, 0);
  EXPECT_EQ(corrupt.err_lines(), 1) << corrupt.err;
  EXPECT_NE(corrupt.err.find("cache file '" + path + "' is corrupt"), std::string::npos) << corrupt.err;
  EXPECT_TRUE(corrupt.out.empty());
  std::filesystem::remove(path);
}

TEST(CacheFile, CliRoundTripWithQuestions) {
  const std::string stories = test_paths::stories260k(), path = scratch("cli-q.kvc");
  const std::string base = "generate -m " + stories +
                           " -p 'Lily had a red ball. She liked to play with it in the park.' -q 'What did Lily have?' -q 'Where?'"
                           " -n 12 --json -t 1 --kv-type f32";
  const CliResult saved = run_cli(base + " --save-cache " + path);
  ASSERT_EQ(saved.status, 0) << saved.err;
  const CliResult loaded = run_cli(base + " --load-cache " + path);
  ASSERT_EQ(loaded.status, 0) << loaded.err;
  const auto js = nlohmann::json::parse(saved.out), jl = nlohmann::json::parse(loaded.out);
  ASSERT_EQ(jl.at("answers").size(), 2u);
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(jl.at("answers")[i].at("output_tokens"), js.at("answers")[i].at("output_tokens"));
  EXPECT_TRUE(jl.at("cache_loaded").get<bool>());
  // The same context with other questions reuses the cache.
  const CliResult other = run_cli("generate -m " + stories +
                                  " -p 'Lily had a red ball. She liked to play with it in the park.' -q 'Who?' -n 4 --json "
                                  "--load-cache " + path);
  EXPECT_EQ(other.status, 0) << other.err;
  std::filesystem::remove(path);
}

TEST(CacheFile, KiviRecentWindowCountsAreChecked) {
  auto model = Model::load(synthetic_model("synth_qwen2_f32"));  // head size 64: whole KIVI2 blocks
  SessionOptions o;
  o.kv_type_k = o.kv_type_v = KvType::KIVI2;
  Session s(*model, o);
  std::vector<int32_t> prompt;
  for (int32_t i = 0; i < 40; ++i) prompt.push_back((7 * i + 3) % static_cast<int32_t>(model->config().n_vocab));
  s.eval(prompt);  // every run: one group of 32 and 8 slots waiting
  const std::string path = scratch("kivi-window.kvc");
  save_cache(s, prompt, path);
  const auto good = read_bytes(path);
  const CacheFileInfo info = parse_cache_file(good.data(), good.size(), "x");
  ASSERT_EQ(info.version, 4u);
  ASSERT_EQ(info.runs[0].recent, 8);
  auto with_recent = [&](uint32_t recent) {  // the count just before the key rows, resealed
    auto b = good;
    std::memcpy(b.data() + info.runs[0].k_offset - 4, &recent, 4);
    const uint64_t h = Hash64::of(b.data(), b.size() - 8);
    std::memcpy(b.data() + b.size() - 8, &h, 8);
    return error_of([&] { parse_cache_file(b.data(), b.size(), "x"); });
  };
  EXPECT_NE(with_recent(9).find("has a recent window of 9 of its 40 slots"), std::string::npos) << with_recent(9);
  EXPECT_NE(with_recent(40).find("has a recent window of 40"), std::string::npos) << "a window holds fewer than 32";
  std::filesystem::remove(path);
}
