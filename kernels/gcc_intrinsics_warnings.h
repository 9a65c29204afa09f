#pragma once
// GCC 12 reports false -W(maybe-)uninitialized inside avx512fintrin.h (_mm512_undefined_*
// self-initialisation). They must be silenced before the intrinsics headers are first included,
// so a kernel source includes this header before any other; the pragmas hold to the file's end.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
