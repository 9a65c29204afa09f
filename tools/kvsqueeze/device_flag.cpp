#include "device_flag.h"

namespace kvsqueeze::cli {

void DeviceFlag::add_to(CLI::App& sub) {
  sub.add_option("--device", name, "Where the model runs: cpu or cuda (default: cuda when a GPU is present)");
}

void DeviceFlag::apply(SessionOptions& options) const {
  options.device = name.empty() ? default_device() : parse_device(name);
  require_device(options.device);  // now, not at the first session (a server's first request)
}

}  // namespace kvsqueeze::cli
