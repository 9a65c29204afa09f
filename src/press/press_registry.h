#pragma once
// Registration of presses: each file src/press/NAME_press.cpp defines register_NAME_press(),
// which adds its name, documentation, options and factory. CMake generates the list of those
// calls from the file names (build/generated/builtin_presses.cpp): a new press is one new file.
#include <functional>

#include "kvsqueeze/press.h"

namespace kvsqueeze {

using PressList = std::vector<std::unique_ptr<Press>>;
using ScorerFactory = std::function<std::unique_ptr<Press>(const PressOptionValues&)>;
using WrapperFactory = std::function<std::unique_ptr<Press>(const PressOptionValues&, PressList inner)>;

// A press that wraps none (info.inner must be 0).
void register_scorer(PressInfo info, ScorerFactory factory);
// A press that wraps info.inner presses (-1: one or more).
void register_wrapper(PressInfo info, WrapperFactory factory);

// Every press file's registration (generated).
void register_builtin_presses();

}  // namespace kvsqueeze
