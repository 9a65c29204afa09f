#pragma once
// The engine names parameters by their API field, in backticks ("`ctx_size` must be ..."); the
// CLI shows its own flags instead ("--ctx-size must be ...").
#include <string>

namespace kvsqueeze::cli {

// `message` with every `field` replaced by the CLI flag that sets it (unknown fields lose their backticks).
std::string with_flag_names(const std::string& message);

}  // namespace kvsqueeze::cli
