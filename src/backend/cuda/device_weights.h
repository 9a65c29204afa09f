#pragma once
// A model's weights on the GPU, shared by every CUDA session of that model (a server's sequences,
// an evaluation's engines): matrices dequantized once to bf16, norms and biases in f32, the RoPE
// frequencies. Freed with the last session that holds them.
#include <array>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/device_memory.h"
#include "kvsqueeze/model.h"

namespace kvsqueeze::backend::cuda::inline KVSQ_CUDA_FLAVOR {

struct DeviceMatrix {  // rows x cols, row-major bf16
  DeviceBytes data;
  int64_t rows = 0, cols = 0;
};

struct DeviceWeights {
  static constexpr size_t kMatrices = 7, kVectors = 9;  // backend::Matrix and backend::Vector
  struct Layer {
    std::array<DeviceMatrix, kMatrices> m;
    std::array<DeviceBytes, kVectors> v;  // f32; empty when the model has none
  };
  std::vector<Layer> layers;
  DeviceMatrix output;  // the LM head (a copy of the embeddings when tied)
  DeviceBytes output_norm, inv_freq_global, inv_freq_local;

  const DeviceMatrix& matrix(int64_t layer, Matrix m) const { return layers[static_cast<size_t>(layer)].m[static_cast<size_t>(m)]; }
  const DeviceBytes& vector(int64_t layer, Vector v) const { return layers[static_cast<size_t>(layer)].v[static_cast<size_t>(v)]; }

  // The weights of `model` on the current device: uploaded by the first caller, shared after.
  static std::shared_ptr<const DeviceWeights> of(const Model& model);
};

}  // namespace kvsqueeze::backend::cuda::inline KVSQ_CUDA_FLAVOR
