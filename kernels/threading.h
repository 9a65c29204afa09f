#pragma once
// Thread-count control for all kernels (OpenMP).
namespace kvsqueeze::kernels {

constexpr int kMaxThreads = 1024;
// n == 0: one per core (or OMP_NUM_THREADS); throws kvsqueeze::Error outside [0, kMaxThreads].
void set_num_threads(int n);
int num_threads();
// Ends the calling thread's OpenMP worker threads (kvsqueeze::release_kernels_threads).
void release_threads();

}  // namespace kvsqueeze::kernels
