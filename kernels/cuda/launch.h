#pragma once
// How kernels/cuda/*.cu launch kernels and name their namespace, for the two ways they are
// compiled: by nvcc for the GPU (namespace kvsqueeze::kernels::cuda::device), or, with
// KVSQ_CUDA_EMULATE, by the host compiler into the tests (namespace ...::cuda::emulated), where
// each block's threads run as fibers on the CPU (kernels/cuda/emulation.h). The same kernel
// source is then checked against the CPU kernels on machines without a GPU.
#ifdef KVSQ_CUDA_EMULATE
#include "kernels/cuda/emulation.h"
#define KVSQ_CUDA_FLAVOR emulated
#define KVSQ_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::kvsqueeze::kernels::cuda::emu::launch(dim3(grid), dim3(block), smem, [&] { kernel(__VA_ARGS__); })
#define KVSQ_LAUNCH_ERROR() cudaSuccess
#define KVSQ_DYNAMIC_SHARED(type, name) type* name = ::kvsqueeze::kernels::cuda::emu::dynamic_shared<type>()
#else
#define KVSQ_CUDA_FLAVOR device
#define KVSQ_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#define KVSQ_LAUNCH_ERROR() cudaGetLastError()
#define KVSQ_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif
