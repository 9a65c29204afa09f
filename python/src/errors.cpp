// kvsqueeze::Error and its subclasses as Python exceptions: bad parameters (press expressions,
// options, ratios) are ValueError with the engine's one-line message, missing files
// FileNotFoundError, unusable model files kvsqueeze.ModelError.
#include <Python.h>

#include "bindings.h"
#include "kvsqueeze/error.h"

namespace nb = nanobind;

namespace kvsqueeze::python {
namespace {

PyObject* g_model_error = nullptr;
PyObject* g_context_full = nullptr;
PyObject* g_cancelled = nullptr;

PyObject* new_type(nb::module_& m, const char* name, PyObject* base, const char* doc) {
  const std::string qualified = std::string("kvsqueeze.") + name;
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, base, nullptr);
  if (!type) throw nb::python_error();
  m.attr(name) = nb::handle(type);  // the module holds a reference; the type lives as long as it
  return type;
}

}  // namespace

void bind_errors(nb::module_& m) {
  g_model_error = new_type(m, "ModelError", PyExc_ValueError,
                           "A model file that cannot be used: corrupt, truncated, or an unsupported architecture or type.");
  g_context_full = new_type(m, "ContextFullError", PyExc_ValueError,
                            "The prompt, context or generation does not fit the context size (n_ctx).");
  g_cancelled = new_type(m, "CancelledError", PyExc_RuntimeError, "Work stopped because Engine.cancel() was called.");
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const ContextFullError& e) {
      PyErr_SetString(g_context_full, e.what());
    } catch (const ParameterError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const FileError& e) {
      PyErr_SetString(PyExc_FileNotFoundError, e.what());
    } catch (const ModelError& e) {
      PyErr_SetString(g_model_error, e.what());
    } catch (const CancelledError& e) {
      PyErr_SetString(g_cancelled, e.what());
    } catch (const Error& e) {
      // Every other engine error names a bad input (a malformed expression, a cache file that
      // does not match the model).
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
}

}  // namespace kvsqueeze::python
