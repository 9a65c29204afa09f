#pragma once
// The pieces of the kvsqueeze._core module, one file each.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <initializer_list>
#include <utility>
#include <vector>

namespace kvsqueeze::python {

void bind_errors(nanobind::module_& m);   // errors.cpp: kvsqueeze::Error subclasses -> Python exceptions
void bind_model(nanobind::module_& m);    // model_bindings.cpp: Model, tokenizer, chat template
void bind_engine(nanobind::module_& m);   // engine_bindings.cpp: Engine, plans, generation, accounting
void bind_presses(nanobind::module_& m);  // press_bindings.cpp: the press registry, plan validation
void bind_python_presses(nanobind::module_& m);  // python_press.cpp: ScorerPress subclasses written in Python
void bind_evaluate(nanobind::module_& m);        // eval_bindings.cpp: the evaluation suite, when built

// A numpy array that owns `data` (freed with the array).
template <class T>
nanobind::ndarray<nanobind::numpy, T> owned_array(std::vector<T> data, std::initializer_list<size_t> shape) {
  auto* held = new std::vector<T>(std::move(data));
  nanobind::capsule owner(held, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nanobind::ndarray<nanobind::numpy, T>(held->data(), shape, owner);
}

}  // namespace kvsqueeze::python
