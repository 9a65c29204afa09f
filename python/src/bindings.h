#pragma once
// The pieces of the kvsqueeze._core module, one file each.
#include <nanobind/nanobind.h>

namespace kvsqueeze::python {

void bind_errors(nanobind::module_& m);   // errors.cpp: kvsqueeze::Error subclasses -> Python exceptions
void bind_model(nanobind::module_& m);    // model_bindings.cpp: Model, tokenizer, chat template
void bind_engine(nanobind::module_& m);   // engine_bindings.cpp: Engine, plans, generation, accounting
void bind_presses(nanobind::module_& m);  // press_bindings.cpp: the press registry, plan validation

}  // namespace kvsqueeze::python
