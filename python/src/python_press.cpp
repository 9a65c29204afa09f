// Presses written in Python (kvsqueeze.ScorerPress subclasses) running inside the native pipeline:
// each press object is registered under a name of its own (register_external_press), so that
// expressions, wrappers (adakv(...), per_layer(...)) and every pipeline path use it as a C++
// scorer. Its score() is called per layer and KV head with numpy copies of the head's keys, values
// and positions and the statistics it declared, under the GIL (taken here: the engine runs without
// it, on a worker thread during interruptible calls).
#include <nanobind/stl/string.h>

#include <cmath>
#include <string>
#include <vector>

#include "bindings.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace kvsqueeze::python {
namespace {

// The registry's references to Python press objects: held for the life of the interpreter (an
// engine may use a press any time) and dropped at its exit (atexit), so that nanobind finds no
// leaked objects at shutdown; a press used after that is an error, not a dangling pointer.
std::vector<PyObject*>& held_presses() {
  static std::vector<PyObject*> held;
  return held;
}
bool& interpreter_exiting() {
  static bool exiting = false;
  return exiting;
}

class PythonScorerPress final : public ScorerPress {
 public:
  // `press` is kept alive by the registry's reference for the life of the process.
  PythonScorerPress(PyObject* press, std::string name, StatsRequest needs) : press_(press), name_(std::move(name)), needs_(needs) {}
  std::string name() const override { return name_; }
  StatsRequest needs() const override { return needs_; }

  LayerScores score(const LayerView& v) override {
    nb::gil_scoped_acquire gil;
    if (interpreter_exiting()) throw Error("the Python press " + name_ + " was used after the interpreter began to exit");
    const int64_t hkv = v.n_head_kv(), group = v.group(), dk = v.head_dim_k(), dv = v.head_dim_v();
    const auto& probs = v.stats.attention;
    LayerScores out(static_cast<size_t>(hkv));
    for (int64_t h = 0; h < hkv; ++h) {
      const auto len = static_cast<size_t>(v.length(h));
      const auto pos = v.positions(h);
      nb::dict stats;
      stats["layer"] = v.layer;
      stats["head"] = h;
      if (needs_.window_queries > 0) {
        if (probs.window.empty()) throw Error(name_ + ": window attention was not computed for layer " + std::to_string(v.layer));
        const auto w = static_cast<size_t>(probs.window_rows);
        std::vector<float> a;
        a.reserve(static_cast<size_t>(group) * w * len);
        for (int64_t g = 0; g < group; ++g) {
          const auto& p = probs.window[static_cast<size_t>(h * group + g)];
          a.insert(a.end(), p.begin(), p.begin() + static_cast<std::ptrdiff_t>(w * len));
        }
        stats["attention"] = owned_array(std::move(a), {static_cast<size_t>(group), w, len});
      }
      if (needs_.column_sums) {
        if (probs.column_sums.empty()) throw Error(name_ + ": attention column sums were not computed for layer " + std::to_string(v.layer));
        std::vector<float> c;
        for (int64_t g = 0; g < group; ++g) {
          const auto& p = probs.column_sums[static_cast<size_t>(h * group + g)];
          c.insert(c.end(), p.begin(), p.begin() + static_cast<std::ptrdiff_t>(len));
        }
        stats["column_sums"] = owned_array(std::move(c), {static_cast<size_t>(group), len});
      }
      nb::object result = nb::handle(press_).attr("score")(owned_array(v.keys(h), {len, static_cast<size_t>(dk)}),
                                                          owned_array(v.values(h), {len, static_cast<size_t>(dv)}),
                                                          owned_array(std::vector<int32_t>(pos.begin(), pos.end()), {len}),
                                                          **stats);
      nb::object flat = nb::module_::import_("numpy").attr("ascontiguousarray")(result, "dtype"_a = "float32").attr("reshape")(-1);
      const auto scores = nb::cast<nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>>(flat);
      if (scores.shape(0) != len)
        throw Error(name_ + ".score returned " + std::to_string(scores.shape(0)) + " scores for head " + std::to_string(h) + " of layer " +
                    std::to_string(v.layer) + ", which holds " + std::to_string(len) + " slots");
      out[static_cast<size_t>(h)].assign(scores.data(), scores.data() + len);
    }
    return out;
  }

 private:
  PyObject* press_;
  std::string name_;
  StatsRequest needs_;
};

}  // namespace

void bind_python_presses(nb::module_& m) {
  m.def(
      "register_python_press",
      [](nb::object press, const std::string& name, const std::string& doc, int64_t window_queries, bool column_sums) {
        if (window_queries < 0) throw ParameterError("window_queries", "`window_queries` must be >= 0, got " + std::to_string(window_queries));
        const StatsRequest needs{.window_queries = window_queries, .column_sums = column_sums};
        PyObject* held = press.ptr();
        register_external_press({.name = name, .doc = doc}, [held, name, needs] { return std::make_unique<PythonScorerPress>(held, name, needs); });
        press.inc_ref();  // the registry's reference: the press outlives every engine that may use it
        held_presses().push_back(held);
      },
      "press"_a, "name"_a, "doc"_a, "window_queries"_a, "column_sums"_a,
      "Registers a kvsqueeze.ScorerPress object under `name`, for use in press expressions (ScorerPress.expression() "
      "calls it once per object).");
  nb::module_::import_("atexit").attr("register")(nb::cpp_function([] {
    interpreter_exiting() = true;
    for (PyObject* press : held_presses()) Py_DECREF(press);
    held_presses().clear();
  }));
}

}  // namespace kvsqueeze::python
