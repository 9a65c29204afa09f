#include "kvsqueeze/field_names.h"

namespace kvsqueeze {

std::string rename_fields(const std::string& message, const std::function<std::string(const std::string&)>& rename) {
  std::string out;
  for (size_t i = 0; i < message.size();) {
    const size_t open = message.find('`', i);
    const size_t close = open == std::string::npos ? std::string::npos : message.find('`', open + 1);
    if (close == std::string::npos) {
      out += message.substr(i);
      break;
    }
    out += message.substr(i, open - i) + rename(message.substr(open + 1, close - open - 1));
    i = close + 1;
  }
  return out;
}

}  // namespace kvsqueeze
