// kvsqueeze._core: the engine API (include/kvsqueeze/engine.h) for Python. The kvpress-style
// interface (pipeline, press classes) and the llama-cpp-python-style LLM are written in Python
// on top of it (python/kvsqueeze/).
#include <nanobind/stl/string.h>

#include "bindings.h"
#include "kvsqueeze/kernels_isa.h"

NB_MODULE(_core, m) {
  m.doc() = "Native core of kvsqueeze: models, engines, compression plans and the press registry.";
  kvsqueeze::python::bind_errors(m);
  kvsqueeze::python::bind_model(m);
  kvsqueeze::python::bind_engine(m);
  kvsqueeze::python::bind_presses(m);
  kvsqueeze::python::bind_python_presses(m);
  kvsqueeze::python::bind_evaluate(m);
  m.def("kernels_isa", &kvsqueeze::kernels_isa,
        "The instruction set the numeric kernels use here: avx512_amx, avx512_vnni, avx2 or scalar (chosen at run time; "
        "the environment variable KVSQ_ISA=scalar|avx2|avx512 asks for a lower one).");
}
