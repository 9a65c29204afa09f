#include "press/press_registry.h"

#include "press/builtin_presses.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "kvsqueeze/error.h"

namespace kvsqueeze {
namespace {

struct Entry {
  PressInfo info;
  PressFactory factory;
};

std::map<std::string, Entry>& table() {
  static std::map<std::string, Entry> presses;
  return presses;
}

std::map<std::string, Entry>& registry() {
  static const bool registered = [] {
    register_builtin_presses();
    return true;
  }();
  (void)registered;
  return table();
}

std::string valid_names() {
  std::string names = "none";
  for (const auto& [name, entry] : registry()) names += ", " + name;
  return names;
}

double parse_value(const PressInfo& press, const PressOption& opt, const std::string& text) {
  size_t used = 0;
  double v = 0;
  if (opt.type == "bool") {
    if (text == "true" || text == "1") return 1;
    if (text == "false" || text == "0") return 0;
    throw Error("press '" + press.name + "' option '" + opt.name + "' is a bool (true/false), got '" + text + "'");
  }
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || (opt.type == "int" && v != std::floor(v)))
    throw Error("press '" + press.name + "' option '" + opt.name + "' must be " + (opt.type == "int" ? "an integer" : "a number") +
                ", got '" + text + "'");
  if (!(v >= opt.min && v <= opt.max)) {
    std::ostringstream range;
    range << "[" << opt.min << ", " << opt.max << "]";
    throw Error("press '" + press.name + "' option '" + opt.name + "' must be in " + range.str() + ", got " + text);
  }
  return v;
}

}  // namespace

void register_press(PressInfo info, PressFactory factory) {
  const std::string name = info.name;
  table()[name] = Entry{std::move(info), std::move(factory)};
}

std::vector<PressInfo> list_presses() {
  std::vector<PressInfo> out;
  for (const auto& [name, entry] : registry()) out.push_back(entry.info);
  return out;
}

std::unique_ptr<Press> make_press(const std::string& name, const std::vector<std::string>& options) {
  auto it = registry().find(name);
  if (it == registry().end()) throw Error("unknown press '" + name + "' (valid: " + valid_names() + ")");
  const PressInfo& info = it->second.info;
  PressOptionValues values;
  for (const auto& opt : info.options) values[opt.name] = opt.default_value;
  for (const auto& kv : options) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) throw Error("--press-opt expects KEY=VALUE, got '" + kv + "'");
    const std::string key = kv.substr(0, eq);
    const auto opt = std::find_if(info.options.begin(), info.options.end(), [&](const PressOption& o) { return o.name == key; });
    if (opt == info.options.end()) {
      std::string valid;
      for (const auto& o : info.options) valid += (valid.empty() ? "" : ", ") + o.name;
      throw Error("press '" + name + "' has no option '" + key + "' (valid: " + (valid.empty() ? "none" : valid) + ")");
    }
    values[key] = parse_value(info, *opt, kv.substr(eq + 1));
  }
  return it->second.factory(values);
}

}  // namespace kvsqueeze
