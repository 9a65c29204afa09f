#pragma once
// Which instruction-set variant of the kernels a translation unit belongs to.
//
// Most of kernels/ is compiled several times, once per instruction set (scalar, avx2, avx512;
// cmake/kernel_variants.cmake), each time with KVSQ_VARIANT set to the variant's name. Every
// function of kernels/ whose machine code depends on the target is declared inside
// `namespace kvsqueeze::kernels::inline KVSQ_VARIANT`, so callers still write kernels::matmul
// while each compilation gets its own symbols: an AVX2 copy of an inline helper can never be
// picked by the linker for code that must run anywhere. Types shared by all variants (WeightMatrix,
// KvRun, ...) stay in kvsqueeze::kernels.
//
// Everywhere else (src/, tools/, tests/ and the dispatcher itself) the namespace is `baseline`:
// there the public kernel functions are the entry points of kernels/forward.cpp, which call the
// variant chosen at startup (kernels/dispatch.h), and inline helpers are compiled for the baseline.
// KVSQ_VARIANT_TU is defined in the variants' translation units only.
#if defined(KVSQ_VARIANT)
#define KVSQ_VARIANT_TU 1
#else
#define KVSQ_VARIANT baseline
#endif

#define KVSQ_CAT_(a, b) a##b
#define KVSQ_CAT(a, b) KVSQ_CAT_(a, b)
// The one global symbol of a variant: its table of entry points (kernels/kernel_ops.h).
#define KVSQ_VARIANT_OPS KVSQ_CAT(kvsq_kernel_ops_, KVSQ_VARIANT)
