#pragma once
// Thread-count control for all kernels: OpenMP for our loops, BLAS kept single-threaded
// because it is only ever called from inside our own parallel regions.
namespace kvsqueeze::kernels {

void set_num_threads(int n);  // n <= 0: one per core
int num_threads();

}  // namespace kvsqueeze::kernels
