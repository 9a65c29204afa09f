#include "kernels/threading.h"

#include <omp.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "kvsqueeze/error.h"
#include "kvsqueeze/kernels_isa.h"

namespace kvsqueeze::kernels {

void set_num_threads(int n) {
  // OpenMP would try to start every one of them (100000 threads crash the process).
  if (n < 0 || n > kMaxThreads)
    throw Error("`threads` must be between 0 (one per core) and " + std::to_string(kMaxThreads) + ", got " + std::to_string(n));
  if (n <= 0) {
    // OMP_NUM_THREADS, when set, is the default (the test suite runs processes side by side).
    const char* env = std::getenv("OMP_NUM_THREADS");
    n = env && std::atoi(env) > 0 ? std::atoi(env) : static_cast<int>(std::thread::hardware_concurrency());
  }
  if (n <= 0) n = 1;
  omp_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

void release_threads() {
  if (omp_in_parallel()) return;  // only a thread outside any parallel region owns its team
  omp_pause_resource_all(omp_pause_soft);
}

}  // namespace kvsqueeze::kernels

namespace kvsqueeze {
int kernels_threads() { return kernels::num_threads(); }
void set_kernels_threads(int n) { kernels::set_num_threads(n); }
void release_kernels_threads() { kernels::release_threads(); }
}  // namespace kvsqueeze
