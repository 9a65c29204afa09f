# kernels/ compiled once per instruction set, with run-time dispatch (kernels/dispatch.cpp).
#
# Each variant is an object library built from the same sources with its own -march and
# KVSQ_VARIANT=<name>, which puts its symbols in namespace kvsqueeze::kernels::<name>
# (kernels/variant.h). Template and inline code from other headers (the standard library's
# std::vector, ...) is still emitted once per variant under one shared name, and the linker
# would keep whichever copy it meets first: an AVX-512 copy could end up called from baseline
# code. So on x86-64 Linux each variant is partially linked into one object
# (ld -r --force-group-allocation dissolves the COMDAT groups) whose only global symbol is its
# table of entry points, kvsq_kernel_ops_<name>; everything else in it becomes local (so a
# variant must not share mutable state through inline functions with the rest of the program).

# Variant name -> compiler flags. The scalar variant is the portable baseline.
set(KVSQ_KERNEL_VARIANTS scalar)
set(KVSQ_KERNEL_FLAGS_scalar "")
if(CMAKE_SYSTEM_NAME STREQUAL "Linux" AND CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  set(KVSQ_KERNEL_MULTIVERSION ON)
  list(APPEND KVSQ_KERNEL_VARIANTS avx2 avx512 amx)
  set(KVSQ_KERNEL_FLAGS_scalar -march=x86-64)
  # x86-64-v3: AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE (Haswell, Zen 1 and later). Tuned for Zen 3,
  # where the AVX2 kernels were written and measured: the tuning decides which plain-C++
  # accumulation loops GCC vectorizes and fuses into FMAs (Zen tunings avoid FMA chains), so it
  # changes results in the last bits; with it this variant is instruction for instruction the
  # former -march=native build on that CPU, so speed comparisons there are like for like. Other
  # AVX2 CPUs run it as well; tuning only shifts their speed a little.
  set(KVSQ_KERNEL_FLAGS_avx2 -march=x86-64-v3 -mtune=znver3)
  # x86-64-v4 (AVX-512 F/BW/CD/DQ/VL) plus VNNI (Ice Lake, Zen 4 and later); no BF16 is used.
  set(KVSQ_KERNEL_FLAGS_avx512 -march=x86-64-v4 -mavx512vnni)
  # The avx512 variant plus AMX int8 tiles (Sapphire Rapids and later) for the quantized prefill
  # matmuls (kernels/matmul_amx.h); compilers never emit tile instructions on their own, so only
  # that code differs.
  set(KVSQ_KERNEL_FLAGS_amx -march=x86-64-v4 -mavx512vnni -mamx-tile -mamx-int8)
else()
  set(KVSQ_KERNEL_MULTIVERSION OFF)
endif()

# Adds variant `name` of `sources` to the static library `target`.
function(kvsq_add_kernel_variant target name sources)
  set(objects kvsq_kernels_${name})
  add_library(${objects} OBJECT ${sources})
  target_include_directories(${objects} PRIVATE ${CMAKE_SOURCE_DIR}/include ${CMAKE_SOURCE_DIR})
  target_compile_definitions(${objects} PRIVATE KVSQ_VARIANT=${name} KVSQ_VARIANT_IS_${name}=1)
  # After the directory's options (-march=native when KVSQ_NATIVE), so the variant's -march wins.
  target_compile_options(${objects} PRIVATE ${KVSQ_WARNINGS} ${KVSQ_KERNEL_FLAGS_${name}})
  target_link_libraries(${objects} PRIVATE OpenMP::OpenMP_CXX)
  get_target_property(pic ${target} POSITION_INDEPENDENT_CODE)  # as the library they go into
  if(pic)
    set_target_properties(${objects} PROPERTIES POSITION_INDEPENDENT_CODE ${pic})
  endif()
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # Static locals of inline functions as plain weak symbols, which objcopy can make local
    # (GCC's default STB_GNU_UNIQUE binding stays global and would be defined twice).
    target_compile_options(${objects} PRIVATE -fno-gnu-unique)
  endif()
  if(NOT KVSQ_KERNEL_MULTIVERSION)
    target_sources(${target} PRIVATE $<TARGET_OBJECTS:${objects}>)
    return()
  endif()
  set(merged ${CMAKE_CURRENT_BINARY_DIR}/kernels_${name}.o)
  # Through the compiler driver: its default linker (GNU ld) knows --force-group-allocation.
  add_custom_command(
    OUTPUT ${merged}
    COMMAND ${CMAKE_CXX_COMPILER} -r -nostdlib -Wl,--force-group-allocation -o ${merged} $<TARGET_OBJECTS:${objects}>
    COMMAND ${CMAKE_OBJCOPY} --keep-global-symbol=kvsq_kernel_ops_${name} ${merged}
    DEPENDS ${objects} $<TARGET_OBJECTS:${objects}>
    COMMAND_EXPAND_LISTS VERBATIM
    COMMENT "Partially linking kernel variant ${name}")
  target_sources(${target} PRIVATE ${merged})
endfunction()
