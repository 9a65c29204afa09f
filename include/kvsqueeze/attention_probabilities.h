#pragma once
// Attention probabilities a compression method may ask the forward pass for (LayerStats),
// computed from the scores again in a second pass, never as an n_q x L matrix.
#include <cstdint>
#include <vector>

namespace kvsqueeze {

struct Probabilities {
  int64_t window_rows = 0;
  // [query head] -> window_rows x run length (slots a query cannot see are 0).
  std::vector<std::vector<float>> window;
  // [query head] -> run length.
  std::vector<std::vector<float>> column_sums;
};

}  // namespace kvsqueeze
