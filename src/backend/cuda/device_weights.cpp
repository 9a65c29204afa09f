#include "backend/cuda/device_weights.h"

#include <map>
#include <mutex>

#include "backend/host_math.h"
#include "kernels/fp16.h"
#include "kvsqueeze/error.h"
#include "backend/layer_weights.h"
#include "model/model_weights.h"

namespace kvsqueeze::backend::cuda::inline KVSQ_CUDA_FLAVOR {
namespace {

DeviceBytes upload_floats(const std::vector<float>& v) {
  DeviceBytes d(v.size() * sizeof(float));
  to_device(d.data(), v.data(), v.size() * sizeof(float));
  return d;
}

// Dequantized on the host by the CPU's exact row decoders (rows in parallel), rounded to bf16.
DeviceMatrix upload_matrix(const WeightMatrix& w) {
  DeviceMatrix out;
  out.rows = w.rows;
  out.cols = w.cols;
  if (w.rows == 0) return out;
  std::vector<uint16_t> bf16(static_cast<size_t>(w.rows * w.cols));
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(w.cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < w.rows; ++r) {
      host::get_row(w, r, row.data());
      for (int64_t c = 0; c < w.cols; ++c) bf16[static_cast<size_t>(r * w.cols + c)] = kernels::fp32_to_bf16(row[static_cast<size_t>(c)]);
    }
  }
  out.data = DeviceBytes(bf16.size() * sizeof(uint16_t));
  to_device(out.data.data(), bf16.data(), bf16.size() * sizeof(uint16_t));
  return out;
}

std::shared_ptr<DeviceWeights> upload(const Model& model) {
  const ModelWeights& w = model.weights();
  auto d = std::make_shared<DeviceWeights>();
  d->layers.resize(w.layers.size());
  for (size_t l = 0; l < w.layers.size(); ++l) {
    for (size_t m = 0; m < DeviceWeights::kMatrices; ++m) d->layers[l].m[m] = upload_matrix(weight_matrix(w.layers[l], static_cast<Matrix>(m)));
    for (size_t v = 0; v < DeviceWeights::kVectors; ++v) d->layers[l].v[v] = upload_floats(weight_vector(w.layers[l], static_cast<Vector>(v)));
  }
  d->output = upload_matrix(w.output);
  d->output_norm = upload_floats(w.output_norm);
  d->inv_freq_global = upload_floats(w.inv_freq_global);
  d->inv_freq_local = upload_floats(w.inv_freq_local);
  return d;
}

}  // namespace

std::shared_ptr<const DeviceWeights> DeviceWeights::of(const Model& model) {
  static std::mutex mu;
  static std::map<const Model*, std::weak_ptr<const DeviceWeights>> loaded;
  std::lock_guard<std::mutex> lock(mu);  // one upload per model, whoever asks first
  if (auto held = loaded[&model].lock()) return held;
  std::shared_ptr<const DeviceWeights> fresh = upload(model);
  loaded[&model] = fresh;
  return fresh;
}

}  // namespace kvsqueeze::backend::cuda::inline KVSQ_CUDA_FLAVOR
