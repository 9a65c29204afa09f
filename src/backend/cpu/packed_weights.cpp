#include "backend/cpu/packed_weights.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/huge_pages.h"
#include "kernels/panel_packing.h"
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
    // AVX-512 VNNI: Q4_0/Q5_0/Q8_0/Q4_K/Q6_K in panels of 16 rows, read by one kernel for every token count
    // (kernels/matmul_panels.h). The AMX variant keeps the row-packed copies (its tiles consume the
    // unpacked panels; the panel copies are not measured there yet).
    const char* env = std::getenv("KVSQ_PACK_WEIGHTS");
    const bool panels = kernels::active_isa() == kernels::Isa::Avx512 && !(env && std::strcmp(env, "rows") == 0);
    // Which matrices get a copy and its size; then one huge-page arena holds them all.
    struct Copy {
      WeightMatrix* m;
      size_t offset;  // in the arena
      bool as_panels;
    };
    std::vector<Copy> copies;
    size_t total = 0;
    auto plan = [&](WeightMatrix& m) {
      const bool as_panels = panels && kernels::panel_packable(m.type);
      if (m.rows == 0 || !(as_panels || (!panels && kernels::packing_pays(m.type)))) return;
      const size_t bytes = as_panels ? kernels::panel_packed_bytes(m) : static_cast<size_t>(m.rows) * m.row_bytes;
      copies.push_back({&m, total, as_panels});
      total += (bytes + 63) / 64 * 64;
    };
    for (LayerWeights& l : w.layers)
      for (WeightMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) plan(*m);
    plan(w.output);
    if (copies.empty()) return;
    w.packed_storage = kernels::allocate_huge_pages(total);
    for (const auto& [m, offset, as_panels] : copies) {
      uint8_t* copy = w.packed_storage.get() + offset;
      if (as_panels) {
        // Slices of 4096 rows, each one's GGUF pages handed back once packed: the peak stays one
        // slice above the steady state (the tied embedding / LM head alone is ~145 MB).
        const int64_t slice = 4096;
        for (int64_t r0 = 0; r0 < m->rows; r0 += slice) {
          WeightMatrix part = *m;
          part.data = m->data + static_cast<size_t>(r0) * m->row_bytes;
          part.rows = std::min(slice, m->rows - r0);
          kernels::pack_panels(part, copy + static_cast<size_t>(r0 / kernels::kPanelRows) *
                                                static_cast<size_t>(m->cols / kernels::panel_unit_cols(m->type)) *
                                                kernels::panel_unit_bytes(m->type));
          release_pages(part.data, static_cast<size_t>(part.rows) * m->row_bytes);
        }
        m->panels = copy;
      } else {
        kernels::pack_weights(*m, copy);
        m->packed = copy;
        release_pages(m->data, static_cast<size_t>(m->rows) * m->row_bytes);
      }
    }
  });
}

}  // namespace kvsqueeze::backend
