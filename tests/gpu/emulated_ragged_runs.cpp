// kernels/cuda/ragged_runs.cu compiled for the CPU emulation of CUDA (emulated_kernels_test.cpp).
#define KVSQ_CUDA_EMULATE 1
#include "kernels/cuda/ragged_runs.cu"
