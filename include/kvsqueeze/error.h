#pragma once
// One exception type for every user-facing failure: the CLI prints what() as a single line
// and exits non-zero, so messages must name the bad input and what would be valid.
#include <stdexcept>
#include <string>

namespace kvsqueeze {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace kvsqueeze
