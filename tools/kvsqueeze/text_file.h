#pragma once
// Reading a user-given text file whole, with one clear error naming what it was for.
#include <string>

namespace kvsqueeze::cli {

// Throws kvsqueeze::Error "cannot read WHAT 'PATH'" when the file cannot be opened.
std::string read_text_file(const std::string& path, const std::string& what);

}  // namespace kvsqueeze::cli
