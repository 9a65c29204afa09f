#pragma once
// Thread-count control for all kernels (OpenMP).
namespace kvsqueeze::kernels {

void set_num_threads(int n);  // n <= 0: one per core
int num_threads();

}  // namespace kvsqueeze::kernels
