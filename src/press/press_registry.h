#pragma once
// Registration of presses: each press file defines a register_*_press() function that adds its
// name, documentation, options and factory; builtin_presses.h lists them. (Explicit calls
// rather than static initialisers, which a static library would silently drop.)
#include <functional>

#include "kvsqueeze/press.h"

namespace kvsqueeze {

using PressFactory = std::function<std::unique_ptr<Press>(const PressOptionValues&)>;

void register_press(PressInfo info, PressFactory factory);

}  // namespace kvsqueeze
