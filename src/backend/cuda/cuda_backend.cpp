#include "backend/cuda/cuda_backend.h"

#include <omp.h>

#include <string>

#include "backend/cuda/cuda_kv_storage.h"
#include "backend/host_math.h"
#include "kernels/attention.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/ragged_attention.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/kv_cache.h"
#include "model/model_weights.h"

namespace kvsqueeze::backend::cuda::inline KVSQ_CUDA_FLAVOR {
namespace kc = kernels::cuda;

namespace {

// Owns its device floats, or (a view) points into another buffer's.
struct CudaBuffer final : Buffer {
  DeviceBytes own;
  float* at = nullptr;
};

float* dev(Buffer& b) { return static_cast<CudaBuffer&>(b).at; }
const float* dev(const Buffer& b) { return static_cast<const CudaBuffer&>(b).at; }

void check_blas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) throw Error(std::string("cuBLAS error in ") + what + ": status " + std::to_string(static_cast<int>(status)));
}

}  // namespace

CudaBackend::CudaBackend(const Model& model) : cfg_(model.config()), w_(model.weights()) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    throw Error("device 'cuda' is not available: no CUDA device was found");
  }
  check(cudaSetDevice(0), "selecting the device");
  check(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, 0), "reading the device's attributes");
  weights_ = DeviceWeights::of(model);
  check_blas(cublasCreate(&blas_), "creating a handle");
}

CudaBackend::~CudaBackend() {
  if (blas_) cublasDestroy(blas_);
}

void CudaBackend::set_threads(int n) {
  if (n > 0) omp_set_num_threads(n);  // host work: loading, embedding rows, statistics
}

std::unique_ptr<Buffer> CudaBackend::buffer(int64_t floats) {
  auto b = std::make_unique<CudaBuffer>();
  b->own = DeviceBytes(static_cast<size_t>(floats) * sizeof(float));
  b->at = b->own.as<float>();
  return b;
}

std::unique_ptr<Buffer> CudaBackend::view(Buffer& b, int64_t offset) {
  auto v = std::make_unique<CudaBuffer>();
  v->at = dev(b) + offset;
  return v;
}

void CudaBackend::read(const Buffer& src, int64_t offset, int64_t n, float* dst) const {
  to_host(dst, dev(src) + offset, static_cast<size_t>(n) * sizeof(float));
}

void CudaBackend::gather_rows(const Buffer& x, const int64_t* rows, int64_t count, int64_t width, Buffer& out) {
  ints_.reserve(static_cast<size_t>(count) * sizeof(int64_t));
  to_device(ints_.data(), rows, static_cast<size_t>(count) * sizeof(int64_t));
  check(kc::gather_rows(dev(x), ints_.as<const int64_t>(), count, width, dev(out), nullptr), "gathering rows");
}

// Rows decoded on the host by the CPU's decoders (exactly the CPU backend's embeddings) and uploaded.
void CudaBackend::embed(const int32_t* ids, int64_t n, Buffer& x) {
  const int64_t D = cfg_.n_embd;
  host_rows_.resize(static_cast<size_t>(n * D));
  for (int64_t t = 0; t < n; ++t) {
    float* row = host_rows_.data() + t * D;
    host::get_row(w_.token_embd, ids[t], row);
    if (cfg_.embed_scale != 1.0f)
      for (int64_t i = 0; i < D; ++i) row[i] *= cfg_.embed_scale;
  }
  to_device(dev(x), host_rows_.data(), host_rows_.size() * sizeof(float));
}

void CudaBackend::rms_norm(const Buffer& x, int64_t rows, int64_t width, int64_t layer, Vector w, Buffer& out) {
  const DeviceBytes& scale = weights_->vector(layer, w);
  check(kc::rms_norm_rows(dev(x), scale.size() ? scale.as<const float>() : nullptr, dev(out), rows, width, cfg_.rms_eps, nullptr),
        "rms norm");
}

void CudaBackend::gemm(const DeviceMatrix& w, const float* x, int64_t n, float* y) {
  if (n == 0) return;
  act_bf16_.reserve(static_cast<size_t>(n * w.cols) * sizeof(uint16_t));
  check(kc::f32_to_bf16(x, n * w.cols, act_bf16_.as<uint16_t>(), nullptr), "rounding activations");
  // Column-major view: Y^T (rows x n) = W (rows x cols, stored as cols x rows) ^T  X^T (cols x n).
  const float alpha = 1.0f, beta = 0.0f;
  check_blas(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.rows), static_cast<int>(n), static_cast<int>(w.cols),
                          &alpha, w.data.data(), CUDA_R_16BF, static_cast<int>(w.cols), act_bf16_.data(), CUDA_R_16BF,
                          static_cast<int>(w.cols), &beta, y, CUDA_R_32F, static_cast<int>(w.rows), CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT),
             "a weight GEMM");
}

// cuBLAS picks its GEMM by shape: rows are not computed per kind here (see Backend::matmul).
void CudaBackend::matmul(int64_t layer, Matrix m, const Buffer& x, int64_t n, Buffer& y, int64_t /*decode_rows*/) {
  gemm(weights_->matrix(layer, m), dev(x), n, dev(y));
}

void CudaBackend::add_bias(int64_t layer, Vector b, int64_t n, Buffer& x) {
  const DeviceBytes& bias = weights_->vector(layer, b);
  if (bias.size() == 0) return;
  const int64_t width = static_cast<int64_t>(bias.size() / sizeof(float));
  check(kc::add_rows(dev(x), bias.as<const float>(), n, width, nullptr), "adding a bias");
}

void CudaBackend::rope_tables(const int32_t* pos, int64_t n, bool sliding, Buffer& cos, Buffer& sin) {
  ints_.reserve(static_cast<size_t>(n) * sizeof(int32_t));
  to_device(ints_.data(), pos, static_cast<size_t>(n) * sizeof(int32_t));
  const DeviceBytes& freq = sliding ? weights_->inv_freq_local : weights_->inv_freq_global;
  check(kc::rope_tables(ints_.as<const int32_t>(), n, freq.as<const float>(), cfg_.head_dim_k, dev(cos), dev(sin), nullptr),
        "RoPE tables");
}

void CudaBackend::rope(Buffer& x, int64_t n, int64_t heads, const Buffer& cos, const Buffer& sin) {
  check(kc::rope_apply(dev(x), n, heads, cfg_.head_dim_k, dev(cos), dev(sin), cfg_.rope_neox, nullptr), "RoPE");
}

void CudaBackend::gated_activation(Buffer& gate, const Buffer& up, int64_t n) {
  check(kc::gated_activation(dev(gate), dev(up), n, cfg_.activation == Activation::GeluTanhGated, nullptr), "the gated activation");
}

void CudaBackend::add(Buffer& x, const Buffer& y, int64_t n) { check(kc::add(dev(x), dev(y), n, nullptr), "a residual add"); }

std::unique_ptr<KvStorage> CudaBackend::kv_storage(const KvCacheShape& shape) { return std::make_unique<CudaKvStorage>(shape); }

void CudaBackend::append_kv(KvCache& cache, int64_t layer, int64_t n, const Buffer& k, const Buffer& v, const int32_t* pos) {
  cache.append(layer, n, dev(k), dev(v), pos);  // device rows: CudaKvStorage::append
}

void CudaBackend::attention(const AttentionShape& shape, const Buffer& q, const int32_t* pos, int64_t n, const KvCache& cache,
                            int64_t layer, Buffer& out, const ProbabilityRequest& request, Probabilities* probs) {
  const auto* storage = dynamic_cast<const CudaKvStorage*>(&cache.storage());
  if (!storage) throw Error("internal: the cuda backend attends over a cache held elsewhere");
  const int64_t max_len = storage->max_length(layer);
  const int64_t splits = kc::attention_splits(n, shape.n_head_kv, max_len, sm_count_);
  attn_scratch_.reserve(kc::attention_scratch_floats(n, shape.n_head, splits, shape.head_dim_v) * sizeof(float));
  ints_.reserve(static_cast<size_t>(n) * sizeof(int32_t));
  to_device(ints_.data(), pos, static_cast<size_t>(n) * sizeof(int32_t));
  const bool want = probs && request.any();
  if (want) lse_.reserve(static_cast<size_t>(n * shape.n_head) * sizeof(float));
  kc::AttentionArgs args;
  args.n_head = static_cast<int32_t>(shape.n_head);
  args.scale = shape.scale;
  args.window = shape.window;
  check(kc::attention(args, storage->table(layer), dev(q), ints_.as<const int32_t>(), n, max_len, sm_count_, dev(out),
                      want ? lse_.as<float>() : nullptr, attn_scratch_.as<float>(), nullptr),
        "attention");
  if (!want) return;
  // The probabilities on the host: queries, log-sum-exps and the layer's runs copied back.
  host_q_.resize(static_cast<size_t>(n * shape.n_head * shape.head_dim_k));
  host_lse_.resize(static_cast<size_t>(n * shape.n_head));
  to_host(host_q_.data(), dev(q), host_q_.size() * sizeof(float));
  to_host(host_lse_.data(), lse_.data(), host_lse_.size() * sizeof(float));
  std::vector<KvRun> runs;
  for (int64_t h = 0; h < shape.n_head_kv; ++h) runs.push_back(cache.run(layer, h));
  kernels::attention_probabilities(shape, host_q_.data(), pos, n, runs.data(), host_lse_.data(), request, *probs);
}

void CudaBackend::logits(const Buffer& x, int64_t first, int64_t rows, float* out, int64_t /*decode_rows*/) {
  const int64_t D = cfg_.n_embd, V = weights_->output.rows;
  normed_.reserve(static_cast<size_t>(rows * (D + V)) * sizeof(float));
  float* normed = normed_.as<float>();
  float* logits = normed + rows * D;
  check(kc::rms_norm_rows(dev(x) + first * D, weights_->output_norm.as<const float>(), normed, rows, D, cfg_.rms_eps, nullptr), "the output norm");
  gemm(weights_->output, normed, rows, logits);
  to_host(out, logits, static_cast<size_t>(rows * V) * sizeof(float));
}

}  // namespace kvsqueeze::backend::cuda::inline KVSQ_CUDA_FLAVOR
