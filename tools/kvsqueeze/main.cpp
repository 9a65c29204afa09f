// kvsqueeze: LLM inference with a compressed KV cache. Errors are one line on stderr and a
// non-zero exit status.
#include <cstdio>
#include <exception>
#include <map>
#include <new>
#include <string>

#include "commands.h"
#include "flag_names.h"
#include "kv_type_flags.h"
#include "kvsqueeze/error.h"

namespace {

// Prints "kvsqueeze: error: MESSAGE" as exactly one line: control characters the message echoes
// from the user's input (a newline inside --press-opt, a file name) are written as escapes.
void print_error(const std::string& message, const char* suffix = "") {
  std::string line;
  for (const char ch : kvsqueeze::cli::with_flag_names(message)) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\n') line += "\\n";
    else if (c < 0x20 || c == 0x7f) line += "\\x" + std::string(1, "0123456789abcdef"[c >> 4]) + "0123456789abcdef"[c & 15];
    else line += ch;
  }
  std::fprintf(stderr, "kvsqueeze: error: %s%s\n", line.c_str(), suffix);
}

}  // namespace

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
  add(kvsqueeze::cli::add_eval);
  add(kvsqueeze::cli::add_profile_heads);
  add(kvsqueeze::cli::add_serve);
  std::string valid;
  bool known = false;
  for (const auto* sub : app.get_subcommands({})) {
    valid += (valid.empty() ? "" : ", ") + sub->get_name();
    known = known || (argc > 1 && sub->get_name() == argv[1]);
  }
  if (argc > 1 && argv[1][0] != '-' && !known) {
    print_error("unknown command '" + std::string(argv[1]) + "' (valid: " + valid + ")");
    return 2;
  }
  kvsqueeze::cli::rewrite_llama_flags(argc, argv);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    print_error(e.what(), " (see --help)");
    return 2;
  }
  try {
    for (auto* sub : app.get_subcommands())
      if (runners.count(sub)) return runners[sub]();
    return 2;
  } catch (const kvsqueeze::Error& e) {
    print_error(e.what());
  } catch (const std::bad_alloc&) {
    print_error("out of memory");
  } catch (const std::exception& e) {
    print_error(e.what());
  }
  return 1;
}
