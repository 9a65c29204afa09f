// kvsqueeze: LLM inference with a compressed KV cache. Errors are one line on stderr and a
// non-zero exit status.
#include <cstdio>
#include <exception>
#include <map>
#include <new>
#include <string>

#include "commands.h"
#include "kvsqueeze/error.h"

int main(int argc, char** argv) {
  CLI::App app{"kvsqueeze: long-context LLM inference with a compressed KV cache"};
  app.require_subcommand(1);
  std::map<CLI::App*, kvsqueeze::cli::Runner> runners;
  auto add = [&](kvsqueeze::cli::Runner (*fn)(CLI::App&)) {
    const size_t before = app.get_subcommands({}).size();
    auto runner = fn(app);
    runners[app.get_subcommands({})[before]] = std::move(runner);
  };
  add(kvsqueeze::cli::add_inspect);
  add(kvsqueeze::cli::add_generate);
  add(kvsqueeze::cli::add_bench);
  add(kvsqueeze::cli::add_presses);
  std::string valid;
  bool known = false;
  for (const auto* sub : app.get_subcommands({})) {
    valid += (valid.empty() ? "" : ", ") + sub->get_name();
    known = known || (argc > 1 && sub->get_name() == argv[1]);
  }
  if (argc > 1 && argv[1][0] != '-' && !known) {
    std::fprintf(stderr, "kvsqueeze: error: unknown command '%s' (valid: %s)\n", argv[1], valid.c_str());
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "kvsqueeze: error: %s (see --help)\n", e.what());
    return 2;
  }
  try {
    for (auto* sub : app.get_subcommands())
      if (runners.count(sub)) return runners[sub]();
    return 2;
  } catch (const kvsqueeze::Error& e) {
    std::fprintf(stderr, "kvsqueeze: error: %s\n", e.what());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "kvsqueeze: error: out of memory\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvsqueeze: error: %s\n", e.what());
  }
  return 1;
}
