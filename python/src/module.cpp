// kvsqueeze._core: the engine API (include/kvsqueeze/engine.h) for Python. The kvpress-style
// interface (pipeline, press classes) and the llama-cpp-python-style LLM are written in Python
// on top of it (python/kvsqueeze/).
#include "bindings.h"

NB_MODULE(_core, m) {
  m.doc() = "Native core of kvsqueeze: models, engines, compression plans and the press registry.";
  kvsqueeze::python::bind_errors(m);
  kvsqueeze::python::bind_model(m);
  kvsqueeze::python::bind_engine(m);
  kvsqueeze::python::bind_presses(m);
  kvsqueeze::python::bind_python_presses(m);
  kvsqueeze::python::bind_evaluate(m);
}
