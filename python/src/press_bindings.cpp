// The press registry as data (names, typed options with defaults and ranges, docs, how many
// presses a wrapper takes): python/kvsqueeze/presses.py generates one Python class per press
// from it, so a press added in C++ appears in Python without Python code.
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "bindings.h"
#include "kvsqueeze/press.h"
#include "plan_args.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace kvsqueeze::python {
namespace {

nb::dict option_dict(const PressOption& o) {
  nb::dict d;
  d["name"] = o.name;
  d["type"] = o.type;
  d["doc"] = o.doc;
  if (o.type == "choice" || o.type == "string" || o.type == "floats") {
    d["default"] = o.default_text;
  } else if (o.type == "bool") {
    d["default"] = o.default_value != 0;
  } else if (o.type == "int") {
    d["default"] = static_cast<int64_t>(o.default_value);
  } else {
    d["default"] = o.default_value;
  }
  d["min"] = o.min;
  d["max"] = o.max;
  d["choices"] = o.choices;
  return d;
}

nb::dict press_dict(const PressInfo& p) {
  nb::dict d;
  d["name"] = p.name;
  d["doc"] = p.doc;
  d["inner"] = p.inner;
  d["notes"] = p.notes;
  d["question_length_option"] = p.question_length_option;
  nb::list options;
  for (const auto& o : p.options) options.append(option_dict(o));
  d["options"] = options;
  return d;
}

}  // namespace

void bind_presses(nb::module_& m) {
  m.def(
      "list_presses",
      [] {
        nb::list out;
        for (const auto& p : list_presses()) out.append(press_dict(p));
        return out;
      },
      "Every registered press, sorted by name: name, doc, notes, inner (presses it wraps: 0, 1 or -1 for one or more), "
      "question_length_option, options (name, type, default, min, max, doc, choices).");
  m.def(
      "validate_plan",
      [](const std::string& press, double ratio, const std::vector<std::string>& options, bool query_aware, bool every_chunk,
         int64_t decode_interval, int64_t decode_target, double decode_ratio, const std::string& decode_press,
         const std::vector<std::string>& decode_options) {
        return report_dict(validate_plan(make_plan(press, ratio, options, query_aware, every_chunk, decode_interval, decode_target,
                                                   decode_ratio, decode_press, decode_options)));
      },
      KVSQ_PLAN_ARGS,
      "Checks a compression plan without a model; raises ValueError with the engine's one-line message naming the "
      "field (`press`, `ratio`, `options`, ...).");
}

}  // namespace kvsqueeze::python
