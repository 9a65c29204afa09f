#pragma once
// Registration of presses: each file src/press/NAME_press.cpp defines register_NAME_press(),
// which adds its name, documentation, options and factory. CMake generates the list of those
// calls from the file names (build/generated/builtin_presses.cpp): a new press is one new file.
//
// Options are named fields of a struct of the press's own: each is declared once (its name, the
// field it sets, its range, its doc) and its default is the field's initial value. Validation,
// `kvsqueeze presses [--json]` and the struct the factory receives all come from that list:
//
//   struct SnapKvOptions { int64_t window_size = 64; };
//   register_press<SnapKvOptions>({"snapkv", "doc"}, {field("window_size", &SnapKvOptions::window_size, 1, 1e6, "doc")},
//                                 [](const SnapKvOptions& o) { return std::make_unique<SnapKvPress>(o); });
#include <functional>
#include <map>
#include <type_traits>

#include "kvsqueeze/press.h"

namespace kvsqueeze {

using PressList = std::vector<std::unique_ptr<Press>>;

// Option values after validation, by name (bools as 0/1): what the registry hands a field's reader.
struct PressOptionValues {
  std::map<std::string, double> numbers;
  std::map<std::string, std::string> texts;  // choice, string and floats options as given
  double at(const std::string& key) const;
  const std::string& text(const std::string& key) const;
  std::vector<double> floats(const std::string& key) const;
};

// One declared option of an options struct O: what `presses` shows and validation checks, and
// how the validated value reaches its field.
template <class O>
struct OptionField {
  PressOption decl;
  std::function<void(O&, const PressOptionValues&)> read;
};

// An integer option in [min, max].
template <class O>
OptionField<O> field(std::string name, int64_t O::*f, double min, double max, std::string doc) {
  PressOption d{name, "int", static_cast<double>(O{}.*f), min, max, std::move(doc), {}, ""};
  return {std::move(d), [f, name](O& o, const PressOptionValues& v) { o.*f = static_cast<int64_t>(v.at(name)); }};
}
// A 32-bit RNG seed.
template <class O>
OptionField<O> seed_field(int64_t O::*f, std::string doc) {
  return field("seed", f, 0, 4294967295.0, std::move(doc));
}
// A number in [min, max].
template <class O>
OptionField<O> field(std::string name, double O::*f, double min, double max, std::string doc) {
  PressOption d{name, "float", O{}.*f, min, max, std::move(doc), {}, ""};
  return {std::move(d), [f, name](O& o, const PressOptionValues& v) { o.*f = v.at(name); }};
}
// true / false.
template <class O>
OptionField<O> field(std::string name, bool O::*f, std::string doc) {
  PressOption d{name, "bool", O{}.*f ? 1.0 : 0.0, 0, 1, std::move(doc), {}, ""};
  return {std::move(d), [f, name](O& o, const PressOptionValues& v) { o.*f = v.at(name) != 0; }};
}
// One word of `choices`.
template <class O>
OptionField<O> field(std::string name, std::string O::*f, std::vector<std::string> choices, std::string doc) {
  PressOption d{name, "choice", 0, 0, 0, std::move(doc), std::move(choices), O{}.*f};
  return {std::move(d), [f, name](O& o, const PressOptionValues& v) { o.*f = v.text(name); }};
}
// Free text (a file name, a metric); empty when not given unless the field has a default.
template <class O>
OptionField<O> field(std::string name, std::string O::*f, std::string doc) {
  PressOption d{name, "string", 0, 0, 0, std::move(doc), {}, O{}.*f};
  return {std::move(d), [f, name](O& o, const PressOptionValues& v) { o.*f = v.text(name); }};
}
// Numbers in [min, max] separated by ':' (or ','); empty when not given.
template <class O>
OptionField<O> field(std::string name, std::vector<double> O::*f, double min, double max, std::string doc) {
  PressOption d{name, "floats", 0, min, max, std::move(doc), {}, ""};
  return {std::move(d), [f, name](O& o, const PressOptionValues& v) { o.*f = v.floats(name); }};
}

namespace detail {
// The registry under the typed registrations below: an entry builds its press from the option
// values after validation (PressOptionValues) and the inner presses.
using Factory = std::function<std::unique_ptr<Press>(const PressOptionValues&, PressList inner)>;
void add_entry(PressInfo info, Factory factory);
template <class O>
O read_options(const std::vector<OptionField<O>>& fields, const PressOptionValues& values) {
  O o;
  for (const auto& f : fields) f.read(o, values);
  return o;
}
template <class O>
void declare(PressInfo& info, const std::vector<OptionField<O>>& fields) {
  info.options.clear();
  for (const auto& f : fields) info.options.push_back(f.decl);
}
}  // namespace detail

// A press that wraps none, without options.
inline void register_press(PressInfo info, std::function<std::unique_ptr<Press>()> make) {
  info.inner = 0;
  detail::add_entry(std::move(info), [make = std::move(make)](const PressOptionValues&, PressList) { return make(); });
}
// A press that wraps none, with the options `fields` of its struct O.
template <class O>
void register_press(PressInfo info, std::vector<OptionField<O>> fields,
                    std::type_identity_t<std::function<std::unique_ptr<Press>(const O&)>> make) {
  detail::declare(info, fields);
  info.inner = 0;
  detail::add_entry(std::move(info), [fields = std::move(fields), make = std::move(make)](const PressOptionValues& v, PressList) {
    return make(detail::read_options(fields, v));
  });
}
// A press that wraps info.inner presses (-1: one or more), without options.
inline void register_wrapper(PressInfo info, std::function<std::unique_ptr<Press>(PressList inner)> make) {
  detail::add_entry(std::move(info), [make = std::move(make)](const PressOptionValues&, PressList inner) { return make(std::move(inner)); });
}
// A press that wraps info.inner presses, with the options `fields` of its struct O.
template <class O>
void register_wrapper(PressInfo info, std::vector<OptionField<O>> fields,
                      std::type_identity_t<std::function<std::unique_ptr<Press>(const O&, PressList inner)>> make) {
  detail::declare(info, fields);
  detail::add_entry(std::move(info), [fields = std::move(fields), make = std::move(make)](const PressOptionValues& v, PressList inner) {
    return make(detail::read_options(fields, v), std::move(inner));
  });
}

// Every press file's registration (generated).
void register_builtin_presses();

}  // namespace kvsqueeze
