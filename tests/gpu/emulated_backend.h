#pragma once
// The CUDA backend compiled for the CPU emulation of CUDA (emulated_*.cpp), put in the place of
// the real one for Device::Cuda: every CUDA test then runs its kernels and its backend code on
// the CPU, on machines without a GPU.
namespace emulated_cuda {
void use_for_device_cuda();
}
