#pragma once
// The CPU backend: the forward pass's operations on host memory, by the SIMD kernels of
// kernels/ (the instruction set chosen at run time). Weights are the mapped GGUF's bytes, or their
// packed copies where the kernels read those faster (packed_weights.h).
#include <vector>

#include "backend/backend.h"
#include "kvsqueeze/model.h"

namespace kvsqueeze {
struct ModelWeights;
}

namespace kvsqueeze::backend {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const Model& model);

  Device device() const override { return Device::Cpu; }
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
  const ModelConfig& cfg_;
  const ModelWeights& w_;
  std::vector<float> lse_, normed_;  // attention's log-sum-exps; the output norm's rows
};

}  // namespace kvsqueeze::backend
