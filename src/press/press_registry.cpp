// The press registry and the press expression language:
//   expr := NAME [ "(" arg ("," arg)* ")" ]      arg := expr | KEY "=" VALUE
// Inner expressions are the presses a wrapper takes; KEY=VALUE sets an option of that press.
#include "press/press_registry.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <mutex>
#include <optional>
#include <sstream>

#include "kvsqueeze/error.h"

namespace kvsqueeze {
namespace {

struct Entry {
  PressInfo info;
  detail::Factory factory;
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

// Presses added at run time (register_external_press), apart from the built-in table, which is
// never written after its first use: only these take a lock.
struct ExternalPresses {
  std::mutex mutex;
  std::map<std::string, Entry> entries;
};
ExternalPresses& external() {
  static ExternalPresses presses;
  return presses;
}

// The press called `name`, built-in or external (a copy: external entries may be added meanwhile).
std::optional<Entry> find_entry(const std::string& name) {
  const auto& builtin = registry();
  if (auto it = builtin.find(name); it != builtin.end()) return it->second;
  ExternalPresses& ext = external();
  std::lock_guard<std::mutex> lock(ext.mutex);
  if (auto it = ext.entries.find(name); it != ext.entries.end()) return it->second;
  return std::nullopt;
}

// Every press, sorted by name.
std::map<std::string, Entry> all_entries() {
  std::map<std::string, Entry> out = registry();
  ExternalPresses& ext = external();
  std::lock_guard<std::mutex> lock(ext.mutex);
  out.insert(ext.entries.begin(), ext.entries.end());
  return out;
}

std::string valid_names() {
  std::string names = "none";
  for (const auto& [name, entry] : all_entries()) names += ", " + name;
  return names;
}

std::string join(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : ", ") + w;
  return out;
}

double parse_number(const std::string& press, const PressOption& opt, const std::string& text) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const bool want_int = opt.type == "int";
  if (used != text.size() || text.empty() || !std::isfinite(v) || (want_int && v != std::floor(v)))
    throw Error("press '" + press + "' option '" + opt.name + "' must be " + (want_int ? "an integer" : "a number") + ", got '" +
                text + "'");
  if (!(v >= opt.min && v <= opt.max)) {
    std::ostringstream range;
    range << "[" << opt.min << ", " << opt.max << "]";
    throw Error("press '" + press + "' option '" + opt.name + "' must be in " + range.str() + ", got " + text);
  }
  return v;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : text) {
    if (c == ',' || c == ':') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

void set_option(const PressInfo& info, const PressOption& opt, const std::string& text, PressOptionValues& values) {
  if (opt.type == "bool") {
    if (text == "true" || text == "1") values.numbers[opt.name] = 1;
    else if (text == "false" || text == "0") values.numbers[opt.name] = 0;
    else throw Error("press '" + info.name + "' option '" + opt.name + "' is a bool (true/false), got '" + text + "'");
  } else if (opt.type == "choice") {
    if (std::find(opt.choices.begin(), opt.choices.end(), text) == opt.choices.end())
      throw Error("press '" + info.name + "' option '" + opt.name + "' must be one of " + join(opt.choices) + ", got '" + text + "'");
    values.texts[opt.name] = text;
  } else if (opt.type == "string") {
    if (text.empty()) throw Error("press '" + info.name + "' option '" + opt.name + "' must not be empty");
    values.texts[opt.name] = text;
  } else if (opt.type == "floats") {
    for (const auto& item : split_list(text)) parse_number(info.name, opt, item);
    values.texts[opt.name] = text;
  } else {
    values.numbers[opt.name] = parse_number(info.name, opt, text);
  }
}

struct Node {
  std::string name;
  std::vector<std::pair<std::string, std::string>> options;
  std::vector<Node> inner;
};

class ExpressionParser {
 public:
  explicit ExpressionParser(const std::string& text) : s_(text) {}
  Node parse() {
    Node n = expr();
    skip_space();
    if (i_ != s_.size()) fail("unexpected '" + std::string(1, s_[i_]) + "'");
    return n;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error("bad press expression '" + s_ + "' at character " + std::to_string(i_ + 1) + ": " + what +
                " (expected NAME or NAME(INNER, KEY=VALUE, ...))");
  }
  void skip_space() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  std::string word() {
    skip_space();
    const size_t start = i_;
    while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) || s_[i_] == '_')) ++i_;
    if (i_ == start) fail(i_ < s_.size() ? "unexpected '" + std::string(1, s_[i_]) + "'" : "unexpected end");
    return s_.substr(start, i_ - start);
  }
  Node expr() {
    if (++depth_ > 16) fail("nested too deeply");
    Node n;
    n.name = word();
    skip_space();
    if (i_ < s_.size() && s_[i_] == '(') {
      ++i_;
      for (;;) {
        skip_space();
        const size_t arg_start = i_;
        const std::string w = word();
        skip_space();
        if (i_ < s_.size() && s_[i_] == '=') {
          ++i_;
          const size_t start = i_;
          while (i_ < s_.size() && s_[i_] != ',' && s_[i_] != ')' && s_[i_] != '(') ++i_;
          std::string value = s_.substr(start, i_ - start);
          value.erase(0, value.find_first_not_of(' '));
          value.erase(value.find_last_not_of(' ') + 1);
          n.options.emplace_back(w, value);
        } else {
          i_ = arg_start;  // an inner press: parse it whole
          n.inner.push_back(expr());
        }
        skip_space();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == ')') {
          ++i_;
          break;
        }
        fail(i_ < s_.size() ? "unexpected '" + std::string(1, s_[i_]) + "'" : "missing ')'");
      }
    }
    --depth_;
    return n;
  }
  std::string s_;
  size_t i_ = 0;
  int depth_ = 0;
};

// `around`: a press already built that this node wraps (the merge=... sugar), instead of node.inner.
std::unique_ptr<Press> build(const Node& node, bool root, const std::vector<std::pair<std::string, std::string>>& cli_options,
                             std::vector<bool>& used, std::unique_ptr<Press> around = nullptr) {
  const std::optional<Entry> entry = find_entry(node.name);
  if (!entry) throw Error("unknown press '" + node.name + "' (valid: " + valid_names() + ")");
  const PressInfo& info = entry->info;
  const size_t n_inner = around ? 1 : node.inner.size();
  if (info.inner == 0 && n_inner != 0)
    throw Error("press '" + node.name + "' is a scorer and wraps no other press");
  if (info.inner != 0 && n_inner == 0)
    throw Error("press '" + node.name + "' wraps another press: write " + node.name + "(INNER), e.g. " + node.name + "(snapkv)");
  if (info.inner > 0 && static_cast<int>(n_inner) != info.inner)
    throw Error("press '" + node.name + "' wraps exactly " + std::to_string(info.inner) + " press(es), got " +
                std::to_string(n_inner));
  PressOptionValues values;
  for (const auto& opt : info.options) {
    if (opt.type == "choice" || opt.type == "string" || opt.type == "floats") {
      if (!opt.default_text.empty()) values.texts[opt.name] = opt.default_text;
    } else {
      values.numbers[opt.name] = opt.default_value;
    }
  }
  auto apply = [&](const std::string& key, const std::string& value) {
    const auto opt = std::find_if(info.options.begin(), info.options.end(), [&](const PressOption& o) { return o.name == key; });
    if (opt == info.options.end()) {
      std::vector<std::string> valid;
      for (const auto& o : info.options) valid.push_back(o.name);
      throw Error("press '" + node.name + "' has no option '" + key + "' (valid: " + (valid.empty() ? "none" : join(valid)) +
                  (info.inner != 0 ? "; set an inner press's option as NAME." + key : "") + ")");
    }
    set_option(info, *opt, value, values);
  };
  for (const auto& [key, value] : node.options) apply(key, value);
  for (size_t i = 0; i < cli_options.size(); ++i) {
    const auto& [key, value] = cli_options[i];
    const size_t dot = key.find('.');
    if (dot == std::string::npos ? root : key.substr(0, dot) == node.name) {
      apply(dot == std::string::npos ? key : key.substr(dot + 1), value);
      used[i] = true;
    }
  }
  PressList inner;
  if (around) inner.push_back(std::move(around));
  for (const auto& child : node.inner) inner.push_back(build(child, false, cli_options, used));
  return entry->factory(values, std::move(inner));
}

}  // namespace

double PressOptionValues::at(const std::string& key) const {
  auto it = numbers.find(key);
  if (it == numbers.end()) throw Error("internal: press option '" + key + "' is not a number");
  return it->second;
}

const std::string& PressOptionValues::text(const std::string& key) const {
  static const std::string empty;
  auto it = texts.find(key);
  return it == texts.end() ? empty : it->second;
}

std::vector<double> PressOptionValues::floats(const std::string& key) const {
  std::vector<double> out;
  const std::string& t = text(key);
  if (t.empty()) return out;
  for (const auto& item : split_list(t)) out.push_back(std::stod(item));
  return out;
}

void detail::add_entry(PressInfo info, Factory factory) {
  const std::string name = info.name;
  table()[name] = Entry{std::move(info), std::move(factory)};
}


namespace {

void collect_question_options(const Node& node, int64_t question_tokens, std::vector<std::string>& out) {
  const std::optional<Entry> press = find_entry(node.name);
  if (!press) throw Error("unknown press '" + node.name + "' (valid: " + valid_names() + ")");
  const std::string& option = press->info.question_length_option;
  const std::string entry = node.name + "." + option + "=" + std::to_string(question_tokens);
  if (!option.empty() && std::find(out.begin(), out.end(), entry) == out.end()) out.push_back(entry);
  for (const auto& inner : node.inner) collect_question_options(inner, question_tokens, out);
}

}  // namespace

std::vector<std::string> question_length_options(const std::string& expression, int64_t question_tokens) {
  std::vector<std::string> out;
  collect_question_options(ExpressionParser(expression).parse(), question_tokens, out);
  return out;
}

bool expression_needs_question(const std::string& expression) { return !question_length_options(expression, 1).empty(); }

std::unique_ptr<Press> make_press_for_checks(const std::string& expression, std::vector<std::string> options) {
  for (auto& o : question_length_options(expression, 1)) options.push_back(std::move(o));
  return make_press(expression, options);
}

std::vector<PressInfo> list_presses() {
  std::vector<PressInfo> out;
  for (const auto& [name, entry] : registry()) out.push_back(entry.info);
  return out;
}

namespace {

// Messages echo the user's text: control characters in it are written as escapes, so that every
// error stays one line.
std::string one_line(const std::string& text) {
  std::string out;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += ch;
    }
  }
  return out;
}

std::unique_ptr<Press> make_press_unchecked(const std::string& expression, const std::vector<std::string>& options) {
  const Node root = ExpressionParser(expression).parse();
  std::vector<std::pair<std::string, std::string>> cli;
  for (const auto& kv : options) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) throw ParameterError("options", "`options` expects KEY=VALUE or PRESS.KEY=VALUE, got '" + kv + "'");
    cli.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
  }
  // merge=similarity|cam wraps the whole expression in merging(...) / cam(...); options without a
  // press name still go to the expression's outermost press.
  std::string merge;
  for (size_t i = 0; i < cli.size(); ++i)
    if (cli[i].first == "merge") {
      merge = merge_option_press({"merge=" + cli[i].second});
      cli.erase(cli.begin() + static_cast<std::ptrdiff_t>(i--));
    }
  std::vector<bool> used(cli.size(), false);
  auto press = build(root, true, cli, used);
  if (!merge.empty()) press = build(Node{merge, {}, {}}, false, cli, used, std::move(press));
  for (size_t i = 0; i < cli.size(); ++i)
    if (!used[i])
      throw ParameterError("options", "`options` " + cli[i].first + ": no press '" + cli[i].first.substr(0, cli[i].first.find('.')) +
                  "' in the expression '" + expression + "'");
  return press;
}

}  // namespace

std::unique_ptr<Press> make_press(const std::string& expression, const std::vector<std::string>& options) {
  try {
    return make_press_unchecked(expression, options);
  } catch (const Error& e) {
    const std::string what = e.what();
    if (std::none_of(what.begin(), what.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) throw;
    throw Error(one_line(what));
  }
}

}  // namespace kvsqueeze

namespace kvsqueeze {

std::string merge_option_press(const std::vector<std::string>& options) {
  std::string out;
  for (const auto& kv : options) {
    if (kv.rfind("merge=", 0) != 0) continue;
    const std::string v = kv.substr(6);
    std::vector<std::string> valid;  // listed by descending word ("similarity, cam")
    out.clear();
    for (const auto& [name, entry] : all_entries()) {
      const std::string& policy = entry.info.merge_policy;
      if (policy.empty()) continue;
      valid.insert(std::upper_bound(valid.begin(), valid.end(), policy, std::greater<>()), policy);
      if (policy == v) out = name;
    }
    if (out.empty()) throw ParameterError("options", "`options` merge=" + one_line(v) + ": unknown merge policy (valid: " + join(valid) + ")");
  }
  return out;
}

bool expression_mentions(const std::string& expression, const std::string& press) {
  auto word = [&](size_t i) {
    return i < expression.size() && (std::isalnum(static_cast<unsigned char>(expression[i])) || expression[i] == '_');
  };
  for (size_t at = expression.find(press); at != std::string::npos; at = expression.find(press, at + 1))
    if ((at == 0 || !word(at - 1)) && !word(at + press.size())) return true;
  return false;
}

void register_external_press(PressInfo info, std::function<std::unique_ptr<Press>()> make) {
  const std::string name = info.name;
  bool identifier = !name.empty() && std::isalpha(static_cast<unsigned char>(name[0]));
  for (char c : name) identifier = identifier && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
  if (!identifier) throw Error("a press name is a letter then letters, digits or '_', got '" + one_line(name) + "'");
  if (name == "none" || registry().count(name)) throw Error("press '" + name + "' exists already");
  info.inner = 0;
  info.options.clear();
  ExternalPresses& ext = external();
  std::lock_guard<std::mutex> lock(ext.mutex);
  if (ext.entries.count(name)) throw Error("press '" + name + "' exists already");
  ext.entries[name] = Entry{std::move(info), [make = std::move(make)](const PressOptionValues&, PressList) { return make(); }};
}

}  // namespace kvsqueeze
