#pragma once
// Run-time choice of the kernel variant (cmake/kernel_variants.cmake builds one per instruction
// set). The best one the CPU runs is chosen at the first kernel call; the environment variable
// KVSQ_ISA=scalar|avx2|avx512|amx asks for another. A value that is unknown, or names a variant this
// CPU or build lacks, prints one line to stderr and the best variant is used instead (an
// environment variable should not stop a program that works without it).
#include "kernels/kernel_ops.h"

namespace kvsqueeze::kernels {

enum class Isa { Scalar, Avx2, Avx512, Amx };  // ascending
constexpr Isa kAllIsas[] = {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Amx};

const char* isa_name(Isa isa);   // the KVSQ_ISA value: "scalar", "avx2", "avx512", "amx"
// What kvsqueeze::kernels_isa() reports: "scalar", "avx2", "avx512_vnni", "avx512_amx".
const char* isa_label(Isa isa);
bool isa_built(Isa isa);         // compiled into this program
bool isa_runs(Isa isa);          // compiled in, and this CPU and OS support its instructions

Isa active_isa();
const KernelOps& active_ops();
const KernelOps& isa_ops(Isa isa);  // isa must run here

// For tests: sends every kernel call to `isa` (which must run here) until reset_isa(). Not to be
// called while kernels run on other threads.
void force_isa(Isa isa);
void reset_isa();

}  // namespace kvsqueeze::kernels
