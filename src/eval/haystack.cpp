// The haystack text of the needle tasks: the shipped public-domain book or a user's folder.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "embedded_data.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/tasks.h"

namespace kvsqueeze::eval {

const std::string& default_haystack() {
  static const std::string text = [] {
    const auto& files = embedded_data();
    auto it = files.find("haystack.txt");
    if (it == files.end() || it->second.empty())
      throw Error("the default haystack (data/haystack.txt) is missing from this build");
    return it->second;
  }();
  return text;
}

std::string load_haystack(const std::string& dir) {
  if (dir.empty()) return default_haystack();
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw Error("haystack directory '" + dir + "' does not exist or is not a directory (give a folder of .txt files, or none for the default haystack)");
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.is_regular_file() && entry.path().extension() == ".txt") files.push_back(entry.path());
  if (ec) throw Error("cannot list haystack directory '" + dir + "': " + ec.message());
  std::sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });
  std::string text;
  for (const auto& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw Error("cannot read haystack file '" + file.string() + "'");
    std::ostringstream content;
    content << in.rdbuf();
    std::string part = content.str();
    if (part.find_first_not_of(" \t\r\n") == std::string::npos) continue;
    if (!text.empty()) text += "\n\n";
    text += part;
  }
  if (text.empty())
    throw Error("haystack directory '" + dir + "' has no non-empty .txt file (the haystack is every *.txt file of the folder, in name order)");
  return text;
}

}  // namespace kvsqueeze::eval
