#pragma once
// Which instruction set the numeric kernels use in this process.
#include <string>

namespace kvsqueeze {

// "avx512_amx", "avx512_vnni", "avx2" or "scalar": the best variant this CPU runs, chosen at the
// first kernel call, unless the environment variable KVSQ_ISA=scalar|avx2|avx512|amx asked for a lower one (a
// value that is unknown or unsupported here prints one line to stderr and is ignored).
std::string kernels_isa();
// Threads the CPU kernels run on (the last session's `threads`, or the default), and setting
// them ahead of any session (0: one per core, or OMP_NUM_THREADS; throws when out of range).
int kernels_threads();
void set_kernels_threads(int n);
// Ends the worker threads the calling thread's kernels started (they are started again by its
// next kernel call). For a thread that is done with kernels for a while, while other threads
// run them: OpenMP counts every idle team, and once it sees more threads than cores, every team's
// workers stop spinning between parallel regions, which made decode 14% slower at 4K context.
void release_kernels_threads();

}  // namespace kvsqueeze
