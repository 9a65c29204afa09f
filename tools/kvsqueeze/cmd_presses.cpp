// kvsqueeze presses [--json]: every compression method, its options and defaults.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "kvsqueeze/press.h"

// How every press runs on the CUDA backend today (docs/CUDA.md): the same for all of them.
constexpr const char* kCudaPath =
    "scores on the CPU from a host copy of the layer's runs (attention statistics from the GPU's log-sum-exps); "
    "compaction (the kept slots) on the GPU";

namespace kvsqueeze::cli {
namespace {

int run(bool json) {
  const auto presses = list_presses();
  if (json) {
    nlohmann::json arr = nlohmann::json::array();
    arr.push_back({{"name", "none"}, {"doc", "No compression (the default)."}, {"options", nlohmann::json::array()}});
    for (const auto& p : presses) {
      nlohmann::json opts = nlohmann::json::array();
      for (const auto& o : p.options) {
        nlohmann::json jo = {{"name", o.name}, {"type", o.type}, {"doc", o.doc}};
        if (o.type == "choice" || o.type == "string" || o.type == "floats") {
          jo["default"] = o.default_text;
          if (!o.choices.empty()) jo["choices"] = o.choices;
        } else {
          jo["default"] = o.default_value;
          jo["min"] = o.min;
          jo["max"] = o.max;
        }
        opts.push_back(jo);
      }
      arr.push_back({{"name", p.name}, {"doc", p.doc}, {"options", opts}, {"wraps", p.inner == 0 ? "none" : p.inner < 0 ? "one or more presses" : std::to_string(p.inner) + " press(es)"},
                     {"notes", p.notes}, {"cuda", kCudaPath}});
    }
    std::cout << nlohmann::json{{"presses", arr}}.dump(2) << "\n";
    return 0;
  }
  std::printf("%-16s %s\n", "none", "No compression (the default).");
  for (const auto& p : presses) {
    const std::string shown = p.inner == 0 ? p.name : p.name + (p.inner < 0 ? "(PRESS, ...)" : "(PRESS)");
    std::printf("%-20s %s\n", shown.c_str(), p.doc.c_str());
    for (const auto& o : p.options) {
      if (o.type == "choice" || o.type == "string" || o.type == "floats") {
        std::string choices;
        for (const auto& c : o.choices) choices += (choices.empty() ? "" : "|") + c;
        std::printf("%20s   %s=%s (%s%s): %s\n", "", o.name.c_str(), o.default_text.c_str(), o.type.c_str(),
                    choices.empty() ? "" : (" " + choices).c_str(), o.doc.c_str());
      } else {
        std::printf("%20s   %s=%g (%s in [%g, %g]): %s\n", "", o.name.c_str(), o.default_value, o.type.c_str(), o.min, o.max, o.doc.c_str());
      }
    }
    if (!p.notes.empty()) std::printf("%20s   note: %s\n", "", p.notes.c_str());
  }
  std::printf("\nExpressions wrap presses: adakv(snapkv), composed(snapkv,think), expected_attention(epsilon=0.01).\n"
              "--press-opt KEY=VALUE sets an option of the outermost press, NAME.KEY=VALUE of every press NAME.\n"
              "--press-opt budget=N keeps N slots per head (instead of --ratio); budget_bytes=B fits the compressed layers in B bytes.\n");
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
