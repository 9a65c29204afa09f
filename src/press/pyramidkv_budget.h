#pragma once
#include <cstdint>

namespace kvsqueeze {

// PyramidKV's slots kept by layer `layer` of `n_layer` for a run of `len` slots at compression
// ratio `ratio` (fraction removed), window `window`, steepness `beta` (pyramidkv_press.cpp).
int64_t pyramidkv_layer_budget(int64_t len, double ratio, int64_t window, double beta, int64_t layer, int64_t n_layer);

}  // namespace kvsqueeze
