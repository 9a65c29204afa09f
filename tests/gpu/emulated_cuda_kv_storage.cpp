// src/backend/cuda/cuda_kv_storage.cpp compiled for the CPU emulation of CUDA (cuda_backend_test.cpp's
// KVSQ_GPU_TESTS_EMULATED=1 runs the CUDA backend's tests through it).
#define KVSQ_CUDA_EMULATE 1
#include "backend/cuda/cuda_kv_storage.cpp"
