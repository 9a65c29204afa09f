#include "backend/cpu/packed_weights.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels/dispatch.h"
#include "kernels/weight_packing.h"
#include "kvsqueeze/error.h"
#include "model/model_weights.h"

namespace kvsqueeze::backend {
namespace {

// The whole pages inside [p, p + n): given back once the packed copy replaces them for matmul
// (embedding lookups and device uploads still read them: the kernel maps them in again).
void release_pages(const uint8_t* p, size_t n) {
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

bool wanted() {
  const char* env = std::getenv("KVSQ_PACK_WEIGHTS");
  if (env && std::strcmp(env, "0") == 0) return false;
  // Only the AVX-512 VNNI kernels read packed rows; elsewhere a copy would only cost memory.
  return kernels::active_isa() >= kernels::Isa::Avx512;
}

}  // namespace

void pack_cpu_weights(const ModelWeights& weights) {
  // The object is the Model's own, non-const; sessions see it const because they only read it.
  ModelWeights& w = const_cast<ModelWeights&>(weights);
  std::call_once(w.packed_once, [&w] {
    if (!wanted()) return;
    auto pack = [&w](WeightMatrix& m) {
      if (!kernels::packing_pays(m.type) || m.rows == 0) return;
      const size_t bytes = static_cast<size_t>(m.rows) * m.row_bytes;
      std::unique_ptr<uint8_t[]> copy(new (std::nothrow) uint8_t[bytes]);
      if (!copy) throw Error("out of memory packing a " + std::to_string(bytes) + "-byte weight matrix");
      kernels::pack_weights(m, copy.get());
      m.packed = copy.get();
      w.packed_storage.push_back(std::move(copy));
      release_pages(m.data, bytes);
    };
    for (LayerWeights& l : w.layers)
      for (WeightMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) pack(*m);
    pack(w.output);
  });
}

}  // namespace kvsqueeze::backend
