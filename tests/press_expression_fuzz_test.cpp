// A deterministic counterpart of fuzz/press_expression_fuzz.cpp: a few thousand seeded random
// and mutated press expressions and --press-opt strings. make_press must build a press or throw
// kvsqueeze::Error with a one-line message; nothing else may escape.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <typeinfo>
#include <string>
#include <vector>

#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"

using namespace kvsqueeze;

namespace {

struct Rng {
  std::mt19937 gen;
  explicit Rng(uint32_t seed) : gen(seed) {}
  size_t below(size_t n) { return static_cast<size_t>(gen() % n); }
  bool chance(int percent) { return static_cast<int>(below(100)) < percent; }
  template <class T>
  const T& pick(const std::vector<T>& v) { return v[below(v.size())]; }
};

const std::vector<std::string> kValues = {"0",   "1",     "-1",   "0.5",   "2",     "8",   "1e9",        "1e999", "nan",
                                          "inf", "-inf",  "true", "false", "abc",   "",    "0x10",       " 3 ",   "4294967296",
                                          "-0",  "1.5",   "0.2:0.3", "0.1,0.2", ",", ":", "0.999999", "1e-300", "max",
                                          "mean", "lagkv", "kvpress", "keep_all", "streaming", "key", "99999999999999999999"};
const std::vector<std::string> kPunct = {"(", ")", ",", "=", " ", ".", "\n", "\t", "\r", "\x01", "\xff", "((", "))", "=="};

struct Vocab {
  std::vector<std::string> names, options;
  Vocab() {
    for (const auto& p : list_presses()) {
      names.push_back(p.name);
      for (const auto& o : p.options) options.push_back(o.name);
    }
    names.push_back("none");
    names.push_back("nosuch");
  }
};

std::string random_value(Rng& r) {
  if (r.chance(80)) return r.pick(kValues);
  std::string s;
  for (size_t i = r.below(6); i > 0; --i) s += static_cast<char>(r.below(256));
  return s;
}

// A grammar-shaped expression (often valid, often not: wrong arity, options of other presses).
std::string random_expression(Rng& r, const Vocab& v, int depth) {
  std::string s = r.pick(v.names);
  if (depth > 3 || r.chance(40)) return s;
  s += "(";
  const size_t args = r.below(4);
  for (size_t i = 0; i < args; ++i) {
    if (i) s += r.chance(90) ? ", " : ",";
    if (r.chance(50)) s += random_expression(r, v, depth + 1);
    else s += r.pick(v.options) + "=" + random_value(r);
  }
  return s + (r.chance(95) ? ")" : "");
}

std::string mutate(Rng& r, std::string s, const Vocab& v) {
  for (size_t n = r.below(4); n > 0; --n) {
    const size_t at = s.empty() ? 0 : r.below(s.size() + 1);
    switch (r.below(4)) {
      case 0:  // delete a character
        if (!s.empty() && at < s.size()) s.erase(at, 1);
        break;
      case 1:  // insert punctuation
        s.insert(at, r.pick(kPunct));
        break;
      case 2:  // insert a name
        s.insert(at, r.chance(50) ? r.pick(v.names) : r.pick(v.options));
        break;
      default:  // replace a character by any byte
        if (!s.empty() && at < s.size()) s[at] = static_cast<char>(r.below(256));
    }
  }
  return s;
}

std::string random_option(Rng& r, const Vocab& v) {
  std::string key = r.pick(v.options);
  if (r.chance(40)) key = r.pick(v.names) + "." + key;
  std::string s = key + "=" + random_value(r);
  return r.chance(20) ? mutate(r, s, v) : s;
}

std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace

TEST(PressExpressionFuzz, OnlyOneLineKvsqueezeErrors) {
  const Vocab vocab;
  Rng r(20240611);
  int built = 0, errors = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::string expr;
    switch (r.below(3)) {
      case 0: expr = random_expression(r, vocab, 0); break;
      case 1: expr = mutate(r, random_expression(r, vocab, 0), vocab); break;
      default:
        for (size_t n = 1 + r.below(10); n > 0; --n)
          expr += r.chance(50) ? r.pick(kPunct) : r.chance(50) ? r.pick(vocab.names) : r.pick(vocab.options) + "=" + random_value(r);
    }
    std::vector<std::string> opts;
    for (size_t n = r.chance(50) ? 0 : r.below(4); n > 0; --n) opts.push_back(random_option(r, vocab));
    std::string where = "expression '" + printable(expr) + "' options";
    for (const auto& o : opts) where += " '" + printable(o) + "'";
    try {
      auto press = make_press(expr, opts);
      ASSERT_TRUE(press) << where;
      (void)press->needs();
      ++built;
    } catch (const Error& e) {
      ++errors;
      const std::string what = e.what();
      EXPECT_FALSE(what.empty()) << where;
      EXPECT_EQ(what.find_first_of("\n\r"), std::string::npos) << where << ": message '" << printable(what) << "'";
    } catch (const std::exception& e) {
      ADD_FAILURE() << where << ": " << typeid(e).name() << " (not kvsqueeze::Error): " << e.what();
    } catch (...) {
      ADD_FAILURE() << where << ": a non-std exception";
    }
  }
  // Both outcomes must occur, or the generator tests nothing.
  EXPECT_GT(built, 100);
  EXPECT_GT(errors, 1000);
}

TEST(PressExpressionFuzz, MessagesEchoingControlCharactersStayOneLine) {
  for (const auto& [expr, opt] : std::vector<std::pair<std::string, std::string>>{
           {"snapkv(window_size=8\n)", ""},
           {"snap\nkv", ""},
           {"snapkv(window_size=\r\nx)", ""},
           {"snapkv", "window_size=\n"},
           {"snapkv", "x\ny=1"},
           {"lagkv", "mode=a\nb"},
           {"duo_attention", "sink_size=\n"},
           {"composed(knorm)", "ratios=0.1\n0.2"}}) {
    try {
      (void)make_press(expr, opt.empty() ? std::vector<std::string>{} : std::vector<std::string>{opt});
      ADD_FAILURE() << "accepted '" << printable(expr) << "' '" << printable(opt) << "'";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find_first_of("\n\r"), std::string::npos) << printable(e.what());
    }
  }
}
