// Fuzzes the press expression parser and option parsing: the first line of the input is the
// expression, each further line a --press-opt KEY=VALUE. Any input must build a press or end
// in a one-line kvsqueeze::Error; any other exception, a crash or a multi-line message aborts.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t i = 0; i <= input.size(); ++i)
    if (i == input.size() || input[i] == '\n') {
      lines.push_back(input.substr(start, i - start));
      start = i + 1;
    }
  const std::string expression = lines.front();
  const std::vector<std::string> options(lines.begin() + 1, lines.end());
  try {
    auto press = kvsqueeze::make_press(expression, options);
    (void)press->name();
    (void)press->needs();
  } catch (const kvsqueeze::Error& e) {
    const std::string what = e.what();
    if (what.empty() || what.find('\n') != std::string::npos || what.find('\r') != std::string::npos) std::abort();
  }
  return 0;
}
