#pragma once
// Python str semantics on UTF-8 text, for metrics that must score exactly as the official Python
// code: str.lower(), str.isspace(), str.split(), str.strip() and the Unicode classes of `re`
// (\w, \d). Character properties come from ICU (Python uses its own copy of the Unicode
// database; the two can differ only for characters added in a newer Unicode version).
// Ill-formed UTF-8 is read as U+FFFD, as Python's decode(errors="replace") would.
#include <string>
#include <string_view>
#include <vector>

namespace kvsqueeze::eval::py {

std::u32string code_points(std::string_view utf8);
std::string to_utf8(std::u32string_view text);

bool is_space(char32_t c);    // str.isspace(): category Zs or bidirectional class WS, B or S
bool is_word(char32_t c);     // re's \w for str patterns: str.isalnum() or '_'
bool is_decimal(char32_t c);  // re's \d for str patterns: str.isdecimal() (category Nd)

std::string lower(std::string_view text);                        // str.lower(): full case mapping, final sigma
std::vector<std::string> split_whitespace(std::string_view text);  // str.split()
std::vector<std::string> split(std::string_view text, std::string_view separator);  // str.split(sep)
std::string strip(std::string_view text);                        // str.strip()
std::string join(const std::vector<std::string>& parts, std::string_view separator);

// re.findall(r"\d+", text): maximal runs of Unicode decimal digits, in order.
std::vector<std::string> find_digit_runs(std::string_view text);

}  // namespace kvsqueeze::eval::py
