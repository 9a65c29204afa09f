#pragma once
#include <cstdint>

#include "kvsqueeze/press.h"

namespace kvsqueeze {

// SimLayerKV's laziness measure of a layer (simlayerkv_press.cpp): the attention the window
// queries of `v.stats` (the last n_last of the context) pay to the first n_initial slots plus
// the last n_recent slots before the window, averaged over query heads and window queries.
double simlayerkv_mass(const LayerView& v, int64_t n_initial, int64_t n_recent);

}  // namespace kvsqueeze
