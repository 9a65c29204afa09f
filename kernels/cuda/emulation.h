#pragma once
// A CPU emulation of the CUDA execution model, enough for kernels/cuda/: a launch runs its blocks
// one after another, each block's threads as fibers that switch at __syncthreads and at
// warp shuffles, so that the kernels' indexing, barriers and reductions run as written. Tests
// only (slow, one block at a time); never part of the engine.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <vector>

// The CUDA headers define these for host compilers; here they mean plain (and shared, static) C++.
#undef __global__
#undef __shared__
#undef __forceinline__
#undef __device__
#undef __host__
#define __global__
#define __shared__ static
#define __forceinline__ inline
#define __device__
#define __host__

namespace kvsqueeze::kernels::cuda::emu {

// Switching between a block's threads: on x86-64 by hand (the callee-saved registers and the
// stack pointer, a few nanoseconds; glibc's swapcontext makes a system call per switch, which
// made the emulated tests ~20x slower), elsewhere with ucontext.
#if defined(__x86_64__)
extern "C" void kvsq_emu_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .weak kvsq_emu_switch
  .type kvsq_emu_switch, @function
kvsq_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size kvsq_emu_switch, .-kvsq_emu_switch
)");
struct Context {
  void* sp = nullptr;
};
inline void switch_to(Context& from, Context& to) { kvsq_emu_switch(&from.sp, to.sp); }
// A context that starts `entry` on `stack` (which never returns): its first switch pops six
// zeroed registers and returns into entry with the stack aligned as after a call.
inline void make_context(Context& c, std::vector<char>& stack, void (*entry)()) {
  auto top = reinterpret_cast<uintptr_t>(stack.data() + stack.size()) & ~uintptr_t{15};
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;
  *--sp = reinterpret_cast<void*>(entry);
  for (int i = 0; i < 6; ++i) *--sp = nullptr;
  c.sp = sp;
}
#else
struct Context {
  ucontext_t uc{};
};
inline void switch_to(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
[[gnu::noinline]] inline void make_context(Context& c, std::vector<char>& stack, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack.data();
  c.uc.uc_stack.ss_size = stack.size();
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
#endif

struct Fiber {
  Context context;
  std::vector<char> stack;
  uint3 thread{};
  bool done = false;
  unsigned shuffles = 0;  // parity selects the buffer (lanes may be one shuffle apart)
  enum class Wait { None, Block, Warp } wait = Wait::None;
};

struct BlockRun {
  std::vector<Fiber> fibers;
  Context scheduler;
  Fiber* current = nullptr;
  uint3 block{};
  dim3 grid{}, dims{};
  std::vector<char> shared;
  std::vector<double> lanes[2];  // warp shuffle values, one per thread, by shuffle parity
  const std::function<void()>* body = nullptr;
};

inline BlockRun*& run() {
  static BlockRun* r = nullptr;
  return r;
}

inline void yield_to_scheduler() { switch_to(run()->current->context, run()->scheduler); }

inline void fiber_main() {
  (*run()->body)();
  run()->current->done = true;
  switch_to(run()->current->context, run()->scheduler);
}

inline void sync_block() {
  run()->current->wait = Fiber::Wait::Block;
  yield_to_scheduler();
}

// Lane `lane` of the caller's warp gets its value after every live lane of the warp deposited one.
template <class T, class Pick>
T shuffle(T v, Pick pick) {
  BlockRun& r = *run();
  const size_t self = static_cast<size_t>(r.current - r.fibers.data());
  std::vector<double>& lanes = r.lanes[r.current->shuffles++ % 2];
  lanes[self] = static_cast<double>(v);
  r.current->wait = Fiber::Wait::Warp;
  yield_to_scheduler();
  const size_t base = self / 32 * 32, lane = self % 32;
  const size_t from = pick(lane);
  return static_cast<T>(lanes[base + (from < 32 && base + from < lanes.size() ? from : lane)]);
}

// Runs every thread of the block until all are done, releasing a barrier once every live thread
// (block) or every live lane of a warp (shuffle) waits on it.
inline void run_block(size_t threads) {
  BlockRun& r = *run();
  const std::span<Fiber> fibers(r.fibers.data(), threads);
  for (;;) {
    bool any = false;
    for (Fiber& f : fibers) {
      if (f.done || f.wait != Fiber::Wait::None) continue;
      any = true;
      r.current = &f;
      switch_to(r.scheduler, f.context);
    }
    if (any) continue;
    bool all_done = true, released = false;
    for (const Fiber& f : fibers) all_done = all_done && f.done;
    if (all_done) return;
    // Warps whose live lanes all wait on a shuffle go on; lanes are exchanged already.
    for (size_t w = 0; w < threads; w += 32) {
      bool ready = true, some = false;
      for (size_t i = w; i < std::min(w + 32, threads); ++i) {
        if (fibers[i].done) continue;
        some = true;
        ready = ready && fibers[i].wait == Fiber::Wait::Warp;
      }
      if (ready && some) {
        for (size_t i = w; i < std::min(w + 32, threads); ++i) fibers[i].wait = Fiber::Wait::None;
        released = true;
      }
    }
    if (released) continue;
    bool block_ready = true;
    for (const Fiber& f : fibers) block_ready = block_ready && (f.done || f.wait == Fiber::Wait::Block);
    if (!block_ready) throw std::logic_error("emulated kernel deadlock: threads wait on different barriers");
    for (Fiber& f : fibers) f.wait = Fiber::Wait::None;
  }
}

inline void launch(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body) {
  static BlockRun r;  // reused: the fibers' stacks are allocated (and first touched) once
  r.grid = grid;
  r.dims = block;
  r.body = &body;
  const size_t threads = static_cast<size_t>(block.x) * block.y * block.z;
  if (r.fibers.size() < threads) r.fibers.resize(threads);
  r.lanes[0].resize(threads);
  r.lanes[1].resize(threads);
  run() = &r;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        r.block = {bx, by, bz};
        r.shared.assign(shared_bytes + 16, 0);
        for (size_t t = 0; t < threads; ++t) {
          Fiber& f = r.fibers[t];
          f.done = false;
          f.wait = Fiber::Wait::None;
          f.shuffles = 0;
          if (f.stack.empty()) f.stack.resize(128 * 1024);
          f.thread = {static_cast<unsigned>(t % block.x), static_cast<unsigned>(t / block.x % block.y),
                      static_cast<unsigned>(t / (block.x * block.y))};
          make_context(f.context, f.stack, fiber_main);
        }
        run_block(threads);
      }
  run() = nullptr;
}

template <class T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(run()->shared.data());
}

}  // namespace kvsqueeze::kernels::cuda::emu

#define threadIdx (::kvsqueeze::kernels::cuda::emu::run()->current->thread)
#define blockIdx (::kvsqueeze::kernels::cuda::emu::run()->block)
#define blockDim (::kvsqueeze::kernels::cuda::emu::run()->dims)
#define __syncthreads() ::kvsqueeze::kernels::cuda::emu::sync_block()
#define __shfl_xor_sync(mask, v, off) \
  ::kvsqueeze::kernels::cuda::emu::shuffle(v, [&](size_t lane) { return lane ^ static_cast<size_t>(off); })
#define __shfl_down_sync(mask, v, off) \
  ::kvsqueeze::kernels::cuda::emu::shuffle(v, [&](size_t lane) { return lane + static_cast<size_t>(off); })
#define __expf expf

namespace kvsqueeze::kernels::cuda::inline emulated {
using std::max;
using std::min;
}  // namespace kvsqueeze::kernels::cuda::inline emulated
