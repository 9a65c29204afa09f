#include "text_file.h"

#include <fstream>
#include <sstream>

#include "kvsqueeze/error.h"

namespace kvsqueeze::cli {

std::string read_text_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + what + " '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace kvsqueeze::cli
