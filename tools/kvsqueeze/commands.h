#pragma once
// Sub-commands of the kvsqueeze CLI: each registers its options on the app and returns the
// function that runs it once the command line has been parsed.
#include <CLI/CLI.hpp>
#include <functional>

namespace kvsqueeze::cli {

using Runner = std::function<int()>;

Runner add_inspect(CLI::App& app);
Runner add_generate(CLI::App& app);
Runner add_bench(CLI::App& app);
Runner add_presses(CLI::App& app);
Runner add_eval(CLI::App& app);
Runner add_profile_heads(CLI::App& app);
Runner add_serve(CLI::App& app);

}  // namespace kvsqueeze::cli
