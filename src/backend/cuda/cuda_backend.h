#pragma once
// The CUDA backend: the forward pass on one GPU. Weights are dequantized once per model to bf16
// and shared by its sessions (device_weights.h; cuBLAS GEMMs with fp32 accumulation, fp32
// activations around them); the KV cache lives in
// a CudaKvStorage and attention reads its ragged runs in place (kernels/cuda/). Probabilities a
// press asks for are computed on the host from the device's log-sum-exps and host copies of the
// layer's runs (the view seam), with the CPU's kernels.
#include <cublas_v2.h>

#include <memory>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/device_memory.h"
#include "backend/cuda/device_weights.h"
#include "kvsqueeze/model.h"

namespace kvsqueeze {
struct ModelWeights;
}

namespace kvsqueeze::backend::cuda::inline KVSQ_CUDA_FLAVOR {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const Model& model);
  ~CudaBackend() override;

  Device device() const override { return Device::Cuda; }
  void set_threads(int n) override;
  std::unique_ptr<Buffer> buffer(int64_t floats) override;
  void read(const Buffer& src, int64_t offset, int64_t n, float* dst) const override;
  std::unique_ptr<Buffer> view(Buffer& b, int64_t offset) override;
  void gather_rows(const Buffer& x, const int64_t* rows, int64_t count, int64_t width, Buffer& out) override;

  void embed(const int32_t* ids, int64_t n, Buffer& x) override;
  void rms_norm(const Buffer& x, int64_t rows, int64_t width, int64_t layer, Vector w, Buffer& out) override;
  void matmul(int64_t layer, Matrix m, const Buffer& x, int64_t n, Buffer& y, int64_t decode_rows) override;
  void add_bias(int64_t layer, Vector b, int64_t n, Buffer& x) override;
  void rope_tables(const int32_t* pos, int64_t n, bool sliding, Buffer& cos, Buffer& sin) override;
  void rope(Buffer& x, int64_t n, int64_t heads, const Buffer& cos, const Buffer& sin) override;
  void gated_activation(Buffer& gate, const Buffer& up, int64_t n) override;
  void add(Buffer& x, const Buffer& y, int64_t n) override;

  std::unique_ptr<KvStorage> kv_storage(const KvCacheShape& shape) override;
  void append_kv(KvCache& cache, int64_t layer, int64_t n, const Buffer& k, const Buffer& v, const int32_t* pos) override;
  void attention(const AttentionShape& shape, const Buffer& q, const int32_t* pos, int64_t n, const KvCache& cache,
                 int64_t layer, Buffer& out, const ProbabilityRequest& request, Probabilities* probs) override;

  void logits(const Buffer& x, int64_t first, int64_t rows, float* out, int64_t decode_rows) override;

 private:
  // y (n rows of w.rows) = x (n rows of w.cols) times w transposed.
  void gemm(const DeviceMatrix& w, const float* x, int64_t n, float* y);

  const ModelConfig& cfg_;
  const ModelWeights& w_;
  cublasHandle_t blas_ = nullptr;
  int sm_count_ = 0;
  std::shared_ptr<const DeviceWeights> weights_;
  // Scratch: bf16 activations for the GEMMs, host values uploaded per call, attention partials.
  DeviceBytes act_bf16_, ints_, attn_scratch_, lse_, normed_;
  std::vector<float> host_rows_, host_q_, host_lse_;
};

}  // namespace kvsqueeze::backend::cuda::inline KVSQ_CUDA_FLAVOR
