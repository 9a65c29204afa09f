#pragma once
// UTF-8 helpers shared by the tokenizers and the streaming detokenizer.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvsqueeze::tok {

// Number of bytes of the well-formed character starting at s[i], or 0 when the bytes there do
// not form one (bad lead byte, bad or missing continuation byte). Follows Unicode Table 3-7, so
// overlong forms, surrogates and code points above U+10FFFF are rejected.
size_t utf8_char_len(std::string_view s, size_t i);

bool utf8_is_valid(std::string_view s);

// Replaces every ill-formed subsequence with U+FFFD, one replacement per maximal subpart (the
// "substitution of maximal subparts" practice, as Rust's String::from_utf8_lossy and so HF
// tokenizers' byte-level decoder do). Valid text comes back unchanged.
std::string utf8_sanitize(std::string_view s);

// Length of the trailing bytes of s that are a proper prefix of a well-formed character, i.e.
// could still become one when more bytes arrive (0 to 3).
size_t utf8_incomplete_tail(std::string_view s);

size_t utf8_count_chars(std::string_view s);  // characters, counting each ill-formed byte as one

void utf8_append(std::string& out, uint32_t code_point);
uint32_t utf8_decode(std::string_view s, size_t i, size_t len);  // code point of a well-formed char

}  // namespace kvsqueeze::tok
