// The machine's integer dot-product peak, per core and on all threads: what the prefill matmuls'
// achieved rate is compared with (docs/BENCHMARKS.md). Two paths:
//   vnni  vpdpbusd zmm, 12 independent accumulators (64 multiply-adds per instruction)
//   amx   tdpbssd on 16x16 int32 tiles, K = 32 bytes (one GGUF sub-block, the shape the amx kernel
//         variant uses) and K = 64 (the tile's full width), 4 independent accumulator tiles
// Prints GMAC/s (multiply-adds; x2 for ops). Built only on x86-64 with a compiler that knows AMX;
// the AMX rows are skipped where the CPU or the kernel does not allow tiles.
//
//   build/bench/kvsq_peak_probe [seconds per measurement, default 1]
// GCC 12's avx512fintrin.h trips -Wuninitialized on its own _mm512_undefined_* (see
// kernels/gcc_intrinsics_warnings.h): silenced before the header is read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <cpuid.h>
#include <immintrin.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace {

bool cpu_has_vnni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vnni");
}

bool amx_usable() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 25))) return false;
  return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
}

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// (No lambdas in the target-specific functions: GCC does not pass the target on to them.)
__attribute__((target("avx512f,avx512vnni"))) double vnni_rate(double seconds) {
  __m512i acc[12];
  for (auto& v : acc) v = _mm512_setzero_si512();
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  long done = 0;
  const auto t0 = Clock::now();
  double el = 0;
  while (el < seconds) {
    for (long i = 0; i < (1 << 16); ++i)
      for (auto& v : acc) v = _mm512_dpbusd_epi32(v, a, b);
    done += 1 << 16;
    el = since(t0);
  }
  int32_t s = 0;
  for (auto& v : acc) s += _mm512_reduce_add_epi32(v);
  if (s == 12345) std::puts("");  // keeps the loop
  return static_cast<double>(done) * 12 * 64 / el;
}

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

__attribute__((target("amx-tile,amx-int8"))) double amx_rate(double seconds, int k) {
  TileConfig c;
  for (int t = 0; t < 4; ++t) c.rows[t] = 16, c.colsb[t] = 64;  // accumulators
  c.rows[4] = 16, c.colsb[4] = static_cast<uint16_t>(k);          // A: 16 x K bytes
  c.rows[5] = static_cast<uint8_t>(k / 4), c.colsb[5] = 64;       // B: K/4 x 64 bytes
  __asm__ volatile("" : : "m"(c) : "memory");  // GCC 12's ldtilecfg asm names 8 of the 64 bytes
  _tile_loadconfig(&c);
  alignas(64) static thread_local int8_t buf[1024];
  _tile_loadd(4, buf, 64);
  _tile_loadd(5, buf, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  long done = 0;
  const auto t0 = Clock::now();
  double el = 0;
  while (el < seconds) {
    for (long i = 0; i < (1 << 14); ++i) {
      _tile_dpbssd(0, 4, 5);
      _tile_dpbssd(1, 4, 5);
      _tile_dpbssd(2, 4, 5);
      _tile_dpbssd(3, 4, 5);
    }
    done += 1 << 14;
    el = since(t0);
  }
  _tile_release();
  return static_cast<double>(done) * 4 * 16 * 16 * k / el;
}

template <class F>
void report(const char* name, F f) {
  const double one = f();
  double all = 0;
  const int nth = omp_get_max_threads();
#pragma omp parallel reduction(+ : all)
  all += f();
  std::printf("%-24s %8.0f GMAC/s per core   %8.0f GMAC/s on %d threads\n", name, one / 1e9, all / 1e9, nth);
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 1.0;
  if (!cpu_has_vnni()) {
    std::puts("no AVX-512 VNNI on this CPU: nothing to measure");
    return 0;
  }
  report("vnni vpdpbusd zmm", [&] { return vnni_rate(seconds); });
  if (!amx_usable()) {
    std::puts("amx: not available (CPU without AMX-INT8, or the kernel refused the tile state)");
    return 0;
  }
  report("amx tdpbssd K=32", [&] { return amx_rate(seconds, 32); });
  report("amx tdpbssd K=64", [&] { return amx_rate(seconds, 64); });
  return 0;
}
