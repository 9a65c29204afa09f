#pragma once
// Engine messages name the API's fields in backticks ("`ratio` must be in [0, 1)"); each front end
// shows its own names for them instead (the CLI its flags, the server its request fields).
#include <functional>
#include <string>

namespace kvsqueeze {

// `message` with every backticked field name (backticks included) replaced by rename(name).
std::string rename_fields(const std::string& message, const std::function<std::string(const std::string&)>& rename);

}  // namespace kvsqueeze
