// kvsqueeze presses [--json]: every compression method, its options and defaults.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "kvsqueeze/press.h"

namespace kvsqueeze::cli {
namespace {

int run(bool json) {
  const auto presses = list_presses();
  if (json) {
    nlohmann::json arr = nlohmann::json::array();
    arr.push_back({{"name", "none"}, {"doc", "No compression (the default)."}, {"options", nlohmann::json::array()}});
    for (const auto& p : presses) {
      nlohmann::json opts = nlohmann::json::array();
      for (const auto& o : p.options)
        opts.push_back({{"name", o.name}, {"type", o.type}, {"default", o.default_value}, {"min", o.min}, {"max", o.max}, {"doc", o.doc}});
      arr.push_back({{"name", p.name}, {"doc", p.doc}, {"options", opts}});
    }
    std::cout << nlohmann::json{{"presses", arr}}.dump(2) << "\n";
    return 0;
  }
  std::printf("%-16s %s\n", "none", "No compression (the default).");
  for (const auto& p : presses) {
    std::printf("%-16s %s\n", p.name.c_str(), p.doc.c_str());
    for (const auto& o : p.options)
      std::printf("%16s   %s=%g (%s in [%g, %g]): %s\n", "", o.name.c_str(), o.default_value, o.type.c_str(), o.min, o.max, o.doc.c_str());
  }
  return 0;
}

}  // namespace

Runner add_presses(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  auto* sub = app.add_subcommand("presses", "List the compression methods (presses), their options and defaults");
  sub->add_flag("--json", *json, "Print JSON");
  return [json] { return run(*json); };
}

}  // namespace kvsqueeze::cli
