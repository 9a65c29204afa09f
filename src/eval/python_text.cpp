#include "eval/python_text.h"

#include <unicode/uchar.h>
#include <unicode/ustring.h>

#include "kvsqueeze/error.h"
#include "tokenizer/utf8.h"

namespace kvsqueeze::eval::py {

std::u32string code_points(std::string_view utf8) {
  const std::string valid = tok::utf8_is_valid(utf8) ? std::string(utf8) : tok::utf8_sanitize(utf8);
  std::u32string out;
  out.reserve(valid.size());
  for (size_t i = 0; i < valid.size();) {
    const size_t len = tok::utf8_char_len(valid, i);
    out.push_back(static_cast<char32_t>(tok::utf8_decode(valid, i, len)));
    i += len;
  }
  return out;
}

std::string to_utf8(std::u32string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) tok::utf8_append(out, static_cast<uint32_t>(c));
  return out;
}

bool is_space(char32_t c) {
  // Python's makeunicodedata.py: a space is category Zs or bidirectional WS, B or S.
  const auto cp = static_cast<UChar32>(c);
  if (u_charType(cp) == U_SPACE_SEPARATOR) return true;
  const UCharDirection direction = u_charDirection(cp);
  return direction == U_WHITE_SPACE_NEUTRAL || direction == U_BLOCK_SEPARATOR || direction == U_SEGMENT_SEPARATOR;
}

bool is_word(char32_t c) {
  // sre: Py_UNICODE_ISALNUM(c) || c == '_'; isalnum = isalpha (L*) or any numeric type.
  if (c == U'_') return true;
  const auto cp = static_cast<UChar32>(c);
  if (U_GET_GC_MASK(cp) & U_GC_L_MASK) return true;
  return u_getIntPropertyValue(cp, UCHAR_NUMERIC_TYPE) != U_NT_NONE;
}

bool is_decimal(char32_t c) {
  return u_getIntPropertyValue(static_cast<UChar32>(c), UCHAR_NUMERIC_TYPE) == U_NT_DECIMAL;
}

std::string lower(std::string_view text) {
  if (text.empty()) return {};
  const std::string valid = tok::utf8_is_valid(text) ? std::string(text) : tok::utf8_sanitize(text);
  UErrorCode status = U_ZERO_ERROR;
  int32_t utf16_len = 0;
  u_strFromUTF8(nullptr, 0, &utf16_len, valid.data(), static_cast<int32_t>(valid.size()), &status);
  std::u16string utf16(static_cast<size_t>(utf16_len), u'\0');
  status = U_ZERO_ERROR;
  u_strFromUTF8(utf16.data(), utf16_len, nullptr, valid.data(), static_cast<int32_t>(valid.size()), &status);
  if (U_FAILURE(status)) throw Error(std::string("cannot read text as UTF-8: ") + u_errorName(status));

  // Root locale (""): the language-independent full mapping Python's str.lower() uses (with the
  // final-sigma rule), never Turkish or Lithuanian tailoring.
  std::u16string lowered(utf16.size() + 16, u'\0');
  for (int attempt = 0; attempt < 2; ++attempt) {
    status = U_ZERO_ERROR;
    const int32_t len = u_strToLower(lowered.data(), static_cast<int32_t>(lowered.size()), utf16.data(),
                                     static_cast<int32_t>(utf16.size()), "", &status);
    if (status == U_BUFFER_OVERFLOW_ERROR) {
      lowered.assign(static_cast<size_t>(len), u'\0');
      continue;
    }
    if (U_FAILURE(status)) throw Error(std::string("cannot lower-case text: ") + u_errorName(status));
    lowered.resize(static_cast<size_t>(len));
    break;
  }

  int32_t utf8_len = 0;
  status = U_ZERO_ERROR;
  u_strToUTF8(nullptr, 0, &utf8_len, lowered.data(), static_cast<int32_t>(lowered.size()), &status);
  std::string out(static_cast<size_t>(utf8_len), '\0');
  status = U_ZERO_ERROR;
  u_strToUTF8(out.data(), utf8_len, nullptr, lowered.data(), static_cast<int32_t>(lowered.size()), &status);
  if (U_FAILURE(status)) throw Error(std::string("cannot write lower-cased text as UTF-8: ") + u_errorName(status));
  return out;
}

std::vector<std::string> split_whitespace(std::string_view text) {
  const std::u32string cps = code_points(text);
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < cps.size()) {
    while (i < cps.size() && is_space(cps[i])) ++i;
    if (i == cps.size()) break;
    const size_t start = i;
    while (i < cps.size() && !is_space(cps[i])) ++i;
    parts.push_back(to_utf8(std::u32string_view(cps).substr(start, i - start)));
  }
  return parts;
}

std::vector<std::string> split(std::string_view text, std::string_view separator) {
  // Byte-wise search is exact for valid UTF-8: a separator never matches inside a character.
  if (separator.empty()) throw Error("split: empty separator");
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t at = text.find(separator, start);
    if (at == std::string_view::npos) {
      parts.emplace_back(text.substr(start));
      return parts;
    }
    parts.emplace_back(text.substr(start, at - start));
    start = at + separator.size();
  }
}

std::string strip(std::string_view text) {
  const std::u32string cps = code_points(text);
  size_t begin = 0, end = cps.size();
  while (begin < end && is_space(cps[begin])) ++begin;
  while (end > begin && is_space(cps[end - 1])) --end;
  return to_utf8(std::u32string_view(cps).substr(begin, end - begin));
}

std::string join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += separator;
    out += parts[i];
  }
  return out;
}

std::vector<std::string> find_digit_runs(std::string_view text) {
  const std::u32string cps = code_points(text);
  std::vector<std::string> runs;
  size_t i = 0;
  while (i < cps.size()) {
    if (!is_decimal(cps[i])) {
      ++i;
      continue;
    }
    const size_t start = i;
    while (i < cps.size() && is_decimal(cps[i])) ++i;
    runs.push_back(to_utf8(std::u32string_view(cps).substr(start, i - start)));
  }
  return runs;
}

}  // namespace kvsqueeze::eval::py
