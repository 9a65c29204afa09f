#pragma once
// Load-time packing of a model's weights for the CPU kernels (kernels/panel_packing.h on AVX-512
// VNNI, kernels/weight_packing.h on the AMX variant).
namespace kvsqueeze {
struct ModelWeights;
}

namespace kvsqueeze::backend {

// Gives every matrix that the active CPU kernels read faster packed its packed copy
// (WeightMatrix::panels or ::packed) and hands the GGUF pages it replaces back to the page cache, so the
// process holds the weights once. Once per model, from the first CPU session on; thread-safe (the
// other sessions wait for it; device sessions read only `data`, which does not change).
// KVSQ_PACK_WEIGHTS=0 turns it off, =rows makes the row-packed copies on AVX-512 too (for
// before/after measurements).
void pack_cpu_weights(const ModelWeights& weights);

}  // namespace kvsqueeze::backend
