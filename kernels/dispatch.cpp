// Which kernel variant runs: detection of the CPU's instruction sets, KVSQ_ISA, the test override.
#include "kernels/dispatch.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

#if defined(KVSQ_HAVE_AVX2) || defined(KVSQ_HAVE_AVX512)
#include <cpuid.h>
#endif
#if defined(KVSQ_HAVE_AMX)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "kvsqueeze/error.h"
#include "kvsqueeze/kernels_isa.h"

// Tables of the variants this build has (kernels/variant_ops.cpp; CMake defines KVSQ_HAVE_*).
extern "C" const kvsqueeze::kernels::KernelOps kvsq_kernel_ops_scalar;
#if defined(KVSQ_HAVE_AVX2)
extern "C" const kvsqueeze::kernels::KernelOps kvsq_kernel_ops_avx2;
#endif
#if defined(KVSQ_HAVE_AVX512)
extern "C" const kvsqueeze::kernels::KernelOps kvsq_kernel_ops_avx512;
#endif
#if defined(KVSQ_HAVE_AMX)
extern "C" const kvsqueeze::kernels::KernelOps kvsq_kernel_ops_amx;
#endif

namespace kvsqueeze::kernels {
namespace {

#if defined(KVSQ_HAVE_AVX2) || defined(KVSQ_HAVE_AVX512)
// x86-64-v3, what the avx2 variant is compiled for. __builtin_cpu_supports also checks that the
// OS saves the AVX (and below, AVX-512) register state; clang 14's builtin does not know F16C,
// LZCNT and MOVBE, so those come from CPUID directly.
bool cpu_x86_64_v3() {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !__builtin_cpu_supports("bmi") ||
      !__builtin_cpu_supports("bmi2"))
    return false;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_F16C) || !(c & bit_MOVBE)) return false;
  return __get_cpuid(0x80000001, &a, &b, &c, &d) && (c & bit_LZCNT);
}
// x86-64-v4 plus VNNI, what the avx512 variant is compiled for.
bool cpu_x86_64_v4_vnni() {
  return cpu_x86_64_v3() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}
#endif
#if defined(KVSQ_HAVE_AMX)
// The avx512 variant's CPU plus AMX-TILE and AMX-INT8 (CPUID leaf 7 EDX bits 24, 25), and Linux's
// permission to use the tile data state, which a process must ask for before its first tile
// instruction (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA; without it: SIGILL).
bool cpu_amx_int8() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!cpu_x86_64_v4_vnni() || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if (!(d & (1u << 24)) || !(d & (1u << 25))) return false;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}
#endif

struct Variant {
  Isa isa;
  const char* name;
  const char* label;
  const KernelOps* ops;  // null: not built
  bool runs;
};

Variant make(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return {isa, "scalar", "scalar", &kvsq_kernel_ops_scalar, true};
    case Isa::Avx2:
#if defined(KVSQ_HAVE_AVX2)
      return {isa, "avx2", "avx2", &kvsq_kernel_ops_avx2, cpu_x86_64_v3()};
#else
      return {isa, "avx2", "avx2", nullptr, false};
#endif
    case Isa::Avx512:
#if defined(KVSQ_HAVE_AVX512)
      return {isa, "avx512", "avx512_vnni", &kvsq_kernel_ops_avx512, cpu_x86_64_v4_vnni()};
#else
      return {isa, "avx512", "avx512_vnni", nullptr, false};
#endif
    case Isa::Amx:
#if defined(KVSQ_HAVE_AMX)
      return {isa, "amx", "avx512_amx", &kvsq_kernel_ops_amx, cpu_amx_int8()};
#else
      return {isa, "amx", "avx512_amx", nullptr, false};
#endif
  }
  return make(Isa::Scalar);
}

const Variant& variant(Isa isa) {
  static const Variant all[] = {make(Isa::Scalar), make(Isa::Avx2), make(Isa::Avx512), make(Isa::Amx)};
  return all[static_cast<int>(isa)];
}

const Variant& best() {
  for (int i = 3; i > 0; --i)
    if (variant(static_cast<Isa>(i)).runs) return variant(static_cast<Isa>(i));
  return variant(Isa::Scalar);
}

const Variant& choose() {
  const Variant& fallback = best();
  const char* env = std::getenv("KVSQ_ISA");
  if (!env || !*env) return fallback;
  const std::string want = env;
  for (Isa isa : kAllIsas) {
    const Variant& v = variant(isa);
    if (want != v.name && want != v.label) continue;
    if (v.runs) return v;
    std::fprintf(stderr, "kvsqueeze: KVSQ_ISA=%s: %s; using %s\n", env,
                 v.ops ? "this CPU does not support it" : "not compiled into this build", fallback.label);
    return fallback;
  }
  std::fprintf(stderr, "kvsqueeze: KVSQ_ISA=%s is unknown (valid: scalar, avx2, avx512, amx); using %s\n", env,
               fallback.label);
  return fallback;
}

const Variant& chosen() {
  static const Variant& v = choose();
  return v;
}

std::atomic<const Variant*> g_forced{nullptr};

const Variant& active() {
  const Variant* v = g_forced.load(std::memory_order_relaxed);
  return v ? *v : chosen();
}

}  // namespace

const char* isa_name(Isa isa) { return variant(isa).name; }
const char* isa_label(Isa isa) { return variant(isa).label; }
bool isa_built(Isa isa) { return variant(isa).ops != nullptr; }
bool isa_runs(Isa isa) { return variant(isa).runs; }
Isa active_isa() { return active().isa; }
const KernelOps& active_ops() { return *active().ops; }

const KernelOps& isa_ops(Isa isa) {
  if (!isa_runs(isa)) throw Error(std::string("kernel variant ") + isa_name(isa) + " cannot run here");
  return *variant(isa).ops;
}

void force_isa(Isa isa) {
  isa_ops(isa);  // throws if it cannot run
  g_forced.store(&variant(isa));
}
void reset_isa() { g_forced.store(nullptr); }

}  // namespace kvsqueeze::kernels

namespace kvsqueeze {
std::string kernels_isa() { return kernels::isa_label(kernels::active_isa()); }
}  // namespace kvsqueeze
