#pragma once
// --device cpu|cuda, shared by the commands that run a model (default: cuda when this build has
// it and a GPU is present, else cpu).
#include <CLI/CLI.hpp>
#include <string>

#include "kvsqueeze/session.h"

namespace kvsqueeze::cli {

struct DeviceFlag {
  std::string name;  // empty: the default device

  void add_to(CLI::App& sub);
  // Sets options.device; throws kvsqueeze::Error for an unknown name or a device not available.
  void apply(SessionOptions& options) const;
};

}  // namespace kvsqueeze::cli
