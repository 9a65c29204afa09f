#pragma once
// A run's rows as float32, as the model sees them: keys rotated back, their offset added and
// pruned channels 0; every type dequantized. For readers outside the engine that need the numbers
// rather than the stored bytes (the Python package's copies of runs numpy cannot view as stored).
#include <cstdint>
#include <vector>

#include "kvsqueeze/kv_run.h"

namespace kvsqueeze {

std::vector<float> run_keys_f32(const KvRun& run, int64_t head_dim_k);  // len x head_dim_k
std::vector<float> run_values_f32(const KvRun& run);                     // len x v_stride

}  // namespace kvsqueeze
