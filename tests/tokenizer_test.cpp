// Tokenizers against the HF reference (fixtures from tests/reference/make_tokenizer_fixtures.py):
// exact ids for every text, decode, streaming detokenization, round trips, bad metadata, and a
// large input that must stay fast.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kvsqueeze/error.h"
#include "kvsqueeze/gguf.h"
#include "kvsqueeze/tokenizer.h"
#include "test_paths.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/utf8.h"
#include "tokenizer/vocab.h"

using namespace kvsqueeze;
using json = nlohmann::json;

namespace {

std::string fixture_path(const std::string& name) { return test_paths::fixtures() + "/tokenizer/" + name; }

json load_json(const std::string& name) {
  std::ifstream in(fixture_path(name));
  if (!in) throw std::runtime_error("missing fixture " + fixture_path(name));
  return json::parse(in);
}

struct Loaded {
  std::unique_ptr<GgufFile> file;
  std::unique_ptr<Tokenizer> tok;
};

Loaded load_gguf(const std::string& path) {
  Loaded l;
  l.file = GgufFile::open(path);
  l.tok = Tokenizer::from_gguf(*l.file);
  return l;
}

std::string stream_decode(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special = false) {
  StreamingDetokenizer sd(tok, skip_special);
  std::string out;
  for (int32_t id : ids) {
    const std::string piece = sd.feed(id);
    EXPECT_TRUE(tok::utf8_is_valid(piece)) << "streamed piece is not whole UTF-8";
    out += piece;
  }
  return out + sd.flush();
}

// Every fixture case: ids, decode (with and without special tokens), streaming, round trip.
void check_against_fixture(const Tokenizer& tok, const json& fx) {
  const std::string name = fx["name"];
  for (const auto& c : fx["cases"]) {
    const std::string text = c["text"];
    const auto expected = c["ids"].get<std::vector<int32_t>>();
    const std::string decoded = c["decoded"];
    const std::string decoded_skip = c["decoded_skip_special"];
    const auto ids = tok.encode(text, false);
    EXPECT_EQ(ids, expected) << name << " encode of " << json(text).dump();
    EXPECT_EQ(tok.decode(expected), decoded) << name << " decode of " << json(text).dump();
    EXPECT_EQ(tok.decode(expected, true), decoded_skip) << name << " decode(skip_special) of " << json(text).dump();
    EXPECT_EQ(stream_decode(tok, expected), decoded) << name << " streaming of " << json(text).dump();
    EXPECT_EQ(stream_decode(tok, expected, true), decoded_skip) << name << " streaming(skip) of " << json(text).dump();
    // Round trip wherever the reference has one (HF's SentencePiece decoder drops a leading space).
    if (decoded == text) {
      EXPECT_EQ(tok.decode(ids), text) << name << " round trip of " << json(text).dump();
    }
  }
  const auto& ws = fx["with_special_tokens"];
  EXPECT_EQ(tok.encode(ws["text"].get<std::string>(), tok.add_bos_by_default()), ws["ids"].get<std::vector<int32_t>>())
      << name << ": BOS handling";
}

// Texts every tokenizer must round-trip exactly (no leading space: see the SentencePiece rule).
const std::vector<std::string> kRoundTrip = {
    "plain words and punctuation!?",
    "multi\n\nline\r\ntext\twith\ttabs and  double  spaces   ",
    "unicode: \xC3\xA9\xC3\xA0\xC3\xBC \xE6\x9D\xB1\xE4\xBA\xAC \xF0\x9F\x98\x80 \xE2\x80\x8B zero-width",
    "numbers 0 12 345 6789 3.14159 -2e10 1,000,000",
    "x",
    "trailing spaces   ",
    "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 family emoji and \xF0\x9D\x94\xB8 math",
};

std::string large_text(size_t bytes) {
  const std::string chunk =
      "Once upon a time, in 2024, a little robot named Bolt counted 1234567 stars. "
      "It said: \"I'm not tired!\" \xE2\x80\x94 caf\xC3\xA9 \xE6\x9D\xB1\xE4\xBA\xAC \xF0\x9F\x98\x80\n\t  ";
  std::string s;
  s.reserve(bytes + chunk.size());
  while (s.size() < bytes) s += chunk;
  return s;
}

}  // namespace

// --- SentencePiece: stories260K (llama) ------------------------------------------------------------

TEST(Tokenizer, Stories260KMatchesReference) {
  auto l = load_gguf(test_paths::stories260k());
  const Tokenizer& tok = *l.tok;
  EXPECT_EQ(tok.model_type(), "llama");
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_TRUE(tok.add_bos_by_default());
  EXPECT_TRUE(tok.is_end_of_generation(2));
  EXPECT_FALSE(tok.is_end_of_generation(1));
  EXPECT_TRUE(tok.is_control(1));
  EXPECT_TRUE(tok.decode_strips_leading_space());
  check_against_fixture(tok, load_json("stories260K.json"));
}

TEST(Tokenizer, Stories260KSpacePrefixAndByteFallback) {
  auto l = load_gguf(test_paths::stories260k());
  const Tokenizer& tok = *l.tok;
  // "▁He" "ll" "o": the space prefix, then score-ordered merges.
  EXPECT_EQ(tok.encode("Hello", true), (std::vector<int32_t>{1, 346, 306, 414}));
  EXPECT_EQ(tok.encode("Hello", false), (std::vector<int32_t>{346, 306, 414}));
  // A BOS written in the text is not doubled by add_bos.
  EXPECT_EQ(tok.encode("<s>Hello", true), tok.encode("<s>Hello", false));
  EXPECT_EQ(tok.encode("<s>Hello", false).front(), 1);
  // Without parse_special the control text is ordinary characters.
  for (int32_t id : tok.encode("<s>Hello", false, false)) EXPECT_FALSE(tok.is_control(id));
  // 東 is not in the 512-token vocabulary: three <0xXX> byte tokens.
  const auto ids = tok.encode("\xE6\x9D\xB1", false);
  ASSERT_EQ(ids.size(), 4u);  // "▁" then the three bytes
  EXPECT_EQ(tok.token_bytes(ids[1]), "\xE6");
  EXPECT_EQ(tok.decode(ids), "\xE6\x9D\xB1");
  for (const auto& text : kRoundTrip) EXPECT_EQ(tok.decode(tok.encode(text, true), true), text) << text;
}

// --- SentencePiece: Gemma 3 (the default model) ------------------------------------------------

TEST(Tokenizer, GemmaMatchesReference) {
  const std::string path = test_paths::gemma_model();
  if (path.empty()) GTEST_SKIP() << "default model not downloaded (scripts/get_default_model.sh)";
  auto l = load_gguf(path);
  const Tokenizer& tok = *l.tok;
  EXPECT_EQ(tok.model_type(), "llama");
  EXPECT_EQ(tok.vocab_size(), 262144);
  EXPECT_EQ(tok.bos_id(), 2);
  EXPECT_EQ(tok.eos_id(), 1);
  EXPECT_TRUE(tok.add_bos_by_default());
  EXPECT_FALSE(tok.decode_strips_leading_space());
  EXPECT_EQ(tok.token_text(106), "<end_of_turn>");
  EXPECT_TRUE(tok.is_end_of_generation(106));
  EXPECT_TRUE(tok.is_end_of_generation(1));
  EXPECT_FALSE(tok.is_end_of_generation(105));
  check_against_fixture(tok, load_json("gemma-3-270m.json"));
  for (const auto& text : kRoundTrip) EXPECT_EQ(tok.decode(tok.encode(text, true), true), text) << text;
  // Gemma has no space prefix, so leading spaces round-trip too.
  EXPECT_EQ(tok.decode(tok.encode("  two leading spaces", false)), "  two leading spaces");
  // "\n" is a user-defined token: matched whole even without parse_special; control tokens are not.
  EXPECT_EQ(tok.encode("\n", false, false), (std::vector<int32_t>{107}));
  for (int32_t id : tok.encode("<start_of_turn>", false, false)) EXPECT_FALSE(tok.is_control(id));
}

TEST(Tokenizer, GemmaEncodes32kTokensFast) {
  const std::string path = test_paths::gemma_model();
  if (path.empty()) GTEST_SKIP() << "default model not downloaded (scripts/get_default_model.sh)";
  auto l = load_gguf(path);
  const std::string text = large_text(160 * 1024);
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = l.tok->encode(text, true);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[gemma] %zu bytes -> %zu tokens in %.1f ms\n", text.size(), ids.size(), ms);
  EXPECT_GT(ids.size(), 30000u);
  EXPECT_EQ(l.tok->decode(ids, true), text);
}

// --- Byte-level BPE: Qwen2.5-Coder-0.5B-Instruct (the default model) -----------------------------

TEST(TokenizerDefaultModel, QwenCoderMatchesReference) {
  const std::string path = test_paths::default_model();
  if (path.empty()) GTEST_SKIP() << "default model not downloaded (scripts/get_model.sh qwen2.5-0.5b-instruct)";
  auto l = load_gguf(path);
  const Tokenizer& tok = *l.tok;
  EXPECT_EQ(tok.model_type(), "gpt2");
  EXPECT_EQ(tok.vocab_size(), 151936);
  EXPECT_EQ(tok.bos_id(), 151643);  // <|endoftext|>
  EXPECT_EQ(tok.eos_id(), 151645);  // <|im_end|>
  EXPECT_FALSE(tok.add_bos_by_default());
  EXPECT_FALSE(tok.decode_strips_leading_space());
  EXPECT_EQ(tok.token_text(151644), "<|im_start|>");
  EXPECT_EQ(tok.token_text(151645), "<|im_end|>");
  EXPECT_TRUE(tok.is_end_of_generation(151645));
  EXPECT_TRUE(tok.is_end_of_generation(151643));
  EXPECT_FALSE(tok.is_end_of_generation(151644));
  EXPECT_TRUE(tok.is_control(151644));
  EXPECT_FALSE(tok.is_control(151657));  // <tool_call> is user-defined
  check_against_fixture(tok, load_json("qwen2.5-coder-0.5b-instruct.json"));
  for (const auto& text : kRoundTrip) EXPECT_EQ(tok.decode(tok.encode(text, false)), text) << text;
  EXPECT_EQ(tok.decode(tok.encode("  two leading spaces", false)), "  two leading spaces");
  // Control tokens are single ids with parse_special, and ordinary text without it.
  EXPECT_EQ(tok.encode("<|im_start|>user\n", false), (std::vector<int32_t>{151644, 872, 198}));
  for (int32_t id : tok.encode("<|im_start|>", false, false)) EXPECT_FALSE(tok.is_control(id));
}

// --- Byte-level BPE -----------------------------------------------------------------------------

TEST(Tokenizer, BpeQwen2MatchesReference) {
  auto l = load_gguf(fixture_path("bpe-qwen2.gguf"));
  const Tokenizer& tok = *l.tok;
  EXPECT_EQ(tok.model_type(), "gpt2");
  EXPECT_EQ(tok.vocab_size(), 2266);
  EXPECT_FALSE(tok.add_bos_by_default());
  EXPECT_FALSE(tok.decode_strips_leading_space());
  EXPECT_EQ(tok.token_text(2), "<|im_end|>");
  EXPECT_TRUE(tok.is_end_of_generation(2));  // EOS
  EXPECT_TRUE(tok.is_end_of_generation(0));  // <|endoftext|>
  EXPECT_TRUE(tok.is_end_of_generation(7));  // <|eot_id|>
  EXPECT_FALSE(tok.is_end_of_generation(1));
  EXPECT_FALSE(tok.is_control(8));  // <think> is user-defined
  check_against_fixture(tok, load_json("bpe-qwen2.json"));
  for (const auto& text : kRoundTrip) EXPECT_EQ(tok.decode(tok.encode(text, false)), text) << text;
  EXPECT_EQ(tok.decode(tok.encode("  leading spaces", false)), "  leading spaces");
}

TEST(Tokenizer, BpeLlama3MatchesReference) {
  auto l = load_gguf(fixture_path("bpe-llama3.gguf"));
  const Tokenizer& tok = *l.tok;
  EXPECT_EQ(tok.bos_id(), 3);
  EXPECT_TRUE(tok.add_bos_by_default());
  EXPECT_TRUE(tok.is_end_of_generation(7));  // eot_token_id
  check_against_fixture(tok, load_json("bpe-llama3.json"));
  for (const auto& text : kRoundTrip) EXPECT_EQ(tok.decode(tok.encode(text, true), true), text) << text;
}

TEST(Tokenizer, BpePreTokenizerVariantsMatchReference) {
  auto file = GgufFile::open(fixture_path("bpe-qwen2.gguf"));
  const json fx = load_json("bpe-pre-variants.json");
  const auto texts = fx["texts"].get<std::vector<std::string>>();
  for (const auto& [pre, expected_all] : fx["variants"].items()) {
    tok::VocabData v = tok::read_vocab(*file);
    v.pre = pre;
    auto tok = tok::build_tokenizer(v);
    for (size_t i = 0; i < texts.size(); ++i) {
      EXPECT_EQ(tok->encode(texts[i], false), expected_all[i].get<std::vector<int32_t>>())
          << "pre=" << pre << " text " << json(texts[i]).dump();
      EXPECT_EQ(tok->decode(tok->encode(texts[i], false)), texts[i]) << "pre=" << pre;
    }
  }
}

TEST(Tokenizer, BpeSplitRegexIsolatesMatchesAndGaps) {
  tok::SplitRegex digits(R"(\p{N})");
  std::vector<std::string_view> pieces;
  digits.split("ab12 c3", pieces);
  EXPECT_EQ(pieces, (std::vector<std::string_view>{"ab", "1", "2", " c", "3"}));
  auto pre = tok::PreTokenizer::for_name("llama-bpe");
  pieces.clear();
  pre->split("Hello world 12345 don't\n\n  x", pieces);
  EXPECT_EQ(pieces, (std::vector<std::string_view>{"Hello", " world", " ", "123", "45", " don", "'t", "\n\n", " ", " x"}));
  // A very long whitespace run (regex backtracking on \s+(?!\S)) still splits.
  const std::string spaces(200000, ' ');
  pieces.clear();
  pre->split(spaces + "x", pieces);
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[0].size(), spaces.size() - 1);
}

// --- Streaming ------------------------------------------------------------------------------------

TEST(StreamingDetokenizer, EmitsOnlyWholeCharacters) {
  auto l = load_gguf(test_paths::stories260k());
  const Tokenizer& tok = *l.tok;
  // Emoji and CJK fall back to byte tokens in this small vocabulary: one character spans 3-4 ids.
  const std::string text = "A \xF0\x9F\x98\x80 and \xE6\x9D\xB1\xE4\xBA\xAC!";
  const auto ids = tok.encode(text, true);
  StreamingDetokenizer sd(tok, true);
  std::string out;
  size_t empty_feeds = 0;
  for (int32_t id : ids) {
    const std::string piece = sd.feed(id);
    EXPECT_TRUE(tok::utf8_is_valid(piece));
    empty_feeds += piece.empty();
    out += piece;
  }
  out += sd.flush();
  EXPECT_EQ(out, text);
  EXPECT_EQ(out, tok.decode(ids, true));
  EXPECT_GE(empty_feeds, 5u);  // the first bytes of each multi-byte character produce nothing
}

TEST(StreamingDetokenizer, CutCharactersBecomeReplacementCharacters) {
  auto l = load_gguf(test_paths::stories260k());
  const Tokenizer& tok = *l.tok;
  const auto e6 = tok.encode("\xE6\x9D\xB1", false);  // "▁", <0xE6>, <0x9D>, <0xB1>
  ASSERT_EQ(e6.size(), 4u);
  const auto a = tok.encode("a", false);
  // An unfinished character followed by a letter: the lead bytes become one U+FFFD.
  std::vector<int32_t> ids = {e6[1], e6[2]};
  ids.insert(ids.end(), a.begin(), a.end());
  std::string expected = "\xEF\xBF\xBD";  // then " a": the space of "▁a" is not at the start
  for (int32_t id : a) expected += tok.token_bytes(id);
  EXPECT_EQ(tok.decode(ids), expected);
  EXPECT_EQ(stream_decode(tok, ids), expected);
  // Cut at the end of the stream: flush() replaces what is left.
  StreamingDetokenizer sd(tok);
  EXPECT_EQ(sd.feed(e6[1]), "");
  EXPECT_EQ(sd.feed(e6[2]), "");
  EXPECT_EQ(sd.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(tok.decode({e6[1], e6[2]}), "\xEF\xBF\xBD");
}

TEST(StreamingDetokenizer, ContinuationKeepsTheLeadingSpace) {
  auto l = load_gguf(test_paths::stories260k());
  const auto ids = l.tok->encode("Once upon a time", false);
  const std::vector<int32_t> rest(ids.begin() + 1, ids.end());  // " upon a time"
  EXPECT_EQ(stream_decode(*l.tok, rest), "upon a time");    // as decode(): the text starts here
  StreamingDetokenizer sd(*l.tok, false, /*starts_text=*/false);
  std::string out;
  for (int32_t id : rest) out += sd.feed(id);
  EXPECT_EQ(out + sd.flush(), " upon a time");
}

TEST(StreamingDetokenizer, BpeMatchesDecode) {
  auto l = load_gguf(fixture_path("bpe-qwen2.gguf"));
  const std::string text = large_text(4000);
  const auto ids = l.tok->encode(text, false);
  EXPECT_EQ(stream_decode(*l.tok, ids), text);
}

// --- UTF-8 helpers --------------------------------------------------------------------------------

TEST(Utf8, SanitizeAndIncompleteTail) {
  EXPECT_EQ(tok::utf8_sanitize("ok \xC3\xA9"), "ok \xC3\xA9");
  EXPECT_EQ(tok::utf8_sanitize("\xFF"), "\xEF\xBF\xBD");
  EXPECT_EQ(tok::utf8_sanitize("\xE6\x9D" "a"), "\xEF\xBF\xBD" "a");  // one U+FFFD per maximal subpart
  EXPECT_EQ(tok::utf8_sanitize("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(tok::utf8_sanitize("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong
  EXPECT_EQ(tok::utf8_incomplete_tail("ab\xF0\x9F\x98"), 3u);
  EXPECT_EQ(tok::utf8_incomplete_tail("ab\xF0\x9F\x98\x80"), 0u);
  EXPECT_EQ(tok::utf8_incomplete_tail("ab\xE6"), 1u);
  EXPECT_EQ(tok::utf8_incomplete_tail("ab\xE0\x80"), 0u);  // can never become valid
  EXPECT_EQ(tok::utf8_incomplete_tail("\x9D"), 0u);
}

TEST(Tokenizer, InvalidUtf8InputIsSanitized) {
  auto l = load_gguf(fixture_path("bpe-qwen2.gguf"));
  EXPECT_EQ(l.tok->encode("a\xFF" "b", false), l.tok->encode("a\xEF\xBF\xBD" "b", false));
}

// --- Bad metadata ---------------------------------------------------------------------------------

namespace {

// A minimal GGUF v3 writer for metadata-only files.
class MiniGguf {
 public:
  void str(const std::string& key, const std::string& value) {
    kv(key, 8);
    put_str(value);
  }
  void u32(const std::string& key, uint32_t value) {
    kv(key, 4);
    put(value);
  }
  void str_array(const std::string& key, const std::vector<std::string>& values) {
    kv(key, 9);
    put<uint32_t>(8);
    put<uint64_t>(values.size());
    for (const auto& v : values) put_str(v);
  }
  void i32_array(const std::string& key, const std::vector<int32_t>& values) {
    kv(key, 9);
    put<uint32_t>(5);
    put<uint64_t>(values.size());
    for (int32_t v : values) put(v);
  }
  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> out;
    auto app = [&out](const void* p, size_t n) {
      out.insert(out.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
    };
    app("GGUF", 4);
    const uint32_t version = 3;
    const uint64_t n_tensors = 0;
    app(&version, 4);
    app(&n_tensors, 8);
    app(&n_kv_, 8);
    out.insert(out.end(), body_.begin(), body_.end());
    return out;
  }

 private:
  template <typename T>
  void put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    body_.insert(body_.end(), p, p + sizeof v);
  }
  void put_str(const std::string& s) {
    put<uint64_t>(s.size());
    body_.insert(body_.end(), s.begin(), s.end());
  }
  void kv(const std::string& key, uint32_t type) {
    ++n_kv_;
    put_str(key);
    put(type);
  }
  std::vector<uint8_t> body_;
  uint64_t n_kv_ = 0;
};

std::string error_of(const MiniGguf& g) {
  const auto bytes = g.bytes();
  auto file = GgufFile::parse(bytes.data(), bytes.size(), "mini");
  try {
    Tokenizer::from_gguf(*file);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Tokenizer, BadMetadataIsAClearError) {
  {
    MiniGguf g;
    g.str("general.architecture", "llama");
    EXPECT_NE(error_of(g).find("tokenizer.ggml.model"), std::string::npos);
  }
  {
    MiniGguf g;
    g.str("tokenizer.ggml.model", "bert");
    g.str_array("tokenizer.ggml.tokens", {"a", "b"});
    const std::string e = error_of(g);
    EXPECT_NE(e.find("'bert'"), std::string::npos) << e;
    EXPECT_NE(e.find("gpt2"), std::string::npos) << e;
  }
  {
    MiniGguf g;
    g.str("tokenizer.ggml.model", "gpt2");
    g.str("tokenizer.ggml.pre", "no-such-pre");
    g.str_array("tokenizer.ggml.tokens", {"a", "b", "ab"});
    g.str_array("tokenizer.ggml.merges", {"a b"});
    const std::string e = error_of(g);
    EXPECT_NE(e.find("'no-such-pre'"), std::string::npos) << e;
    EXPECT_NE(e.find("llama-bpe"), std::string::npos) << e;
    EXPECT_NE(e.find("qwen2"), std::string::npos) << e;
  }
  {
    MiniGguf g;
    g.str("tokenizer.ggml.model", "gpt2");
    g.str("tokenizer.ggml.pre", "qwen2");
    g.str_array("tokenizer.ggml.tokens", {"a", "b"});
    g.str_array("tokenizer.ggml.merges", {"a c"});
    EXPECT_NE(error_of(g).find("merges[0]"), std::string::npos);
  }
  {
    MiniGguf g;
    g.str("tokenizer.ggml.model", "gpt2");
    g.str_array("tokenizer.ggml.tokens", {"a", "b"});
    EXPECT_NE(error_of(g).find("merges"), std::string::npos);
  }
  {
    MiniGguf g;
    g.str("tokenizer.ggml.model", "llama");
    g.str_array("tokenizer.ggml.tokens", {"a", "b"});
    g.i32_array("tokenizer.ggml.token_type", {1});
    EXPECT_NE(error_of(g).find("token_type"), std::string::npos);
  }
  {
    MiniGguf g;
    g.str("tokenizer.ggml.model", "llama");
    g.u32("tokenizer.ggml.tokens", 5);
    EXPECT_NE(error_of(g).find("must be an array"), std::string::npos);
  }
  {
    MiniGguf g;
    g.str("tokenizer.ggml.model", "llama");
    g.i32_array("tokenizer.ggml.tokens", {1, 2});
    const std::string e = error_of(g);
    EXPECT_NE(e.find("tokenizer.ggml.tokens"), std::string::npos) << e;
  }
  // A tiny valid vocabulary works, and out-of-range ids are reported.
  MiniGguf g;
  g.str("tokenizer.ggml.model", "llama");
  g.str_array("tokenizer.ggml.tokens", {"<unk>", "\xE2\x96\x81" "a", "a", "\xE2\x96\x81"});
  g.u32("tokenizer.ggml.bos_token_id", 4294967295u);
  const auto bytes = g.bytes();
  auto file = GgufFile::parse(bytes.data(), bytes.size(), "mini");
  auto tok = Tokenizer::from_gguf(*file);
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_FALSE(tok->add_bos_by_default());
  EXPECT_EQ(tok->encode("a a", true), (std::vector<int32_t>{1, 1}));
  EXPECT_THROW(tok->decode({7}), Error);
  EXPECT_THROW(tok->token_text(-1), Error);
}

// --- Speed on large inputs (no timing assertion: it must simply finish quickly) -------------------

TEST(Tokenizer, LargeInputsAreLinear) {
  auto stories = load_gguf(test_paths::stories260k());
  auto bpe = load_gguf(fixture_path("bpe-qwen2.gguf"));
  const std::string text = large_text(100 * 1024);
  const std::vector<std::string> inputs = {text, std::string(100 * 1024, 'a'), std::string(100 * 1024, ' '),
                                           std::string(30000, '7')};
  for (const Tokenizer* tok : {stories.tok.get(), bpe.tok.get()}) {
    for (const auto& in : inputs) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto ids = tok->encode(in, false);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::printf("[%s] %zu bytes -> %zu tokens in %.1f ms\n", tok->model_type().c_str(), in.size(), ids.size(), ms);
      EXPECT_FALSE(ids.empty());
      if (in[0] != ' ') {
        EXPECT_EQ(tok->decode(ids), in);
      }
    }
  }
}
