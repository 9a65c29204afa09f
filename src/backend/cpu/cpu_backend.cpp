#include "backend/cpu/cpu_backend.h"

#include <algorithm>

#include "backend/cpu/cpu_kv_storage.h"
#include "backend/cpu/packed_weights.h"
#include "backend/layer_weights.h"
#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/threading.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/kv_cache.h"
#include "model/model_weights.h"

namespace kvsqueeze::backend {
namespace {

// Owns its floats, or (a view) points into another buffer's.
struct CpuBuffer final : Buffer {
  std::vector<float> data;
  float* at = nullptr;
};

float* host(Buffer& b) { return static_cast<CpuBuffer&>(b).at; }
const float* host(const Buffer& b) { return static_cast<const CpuBuffer&>(b).at; }

}  // namespace

CpuBackend::CpuBackend(const Model& model) : cfg_(model.config()), w_(model.weights()) { pack_cpu_weights(w_); }

void CpuBackend::set_threads(int n) { kernels::set_num_threads(n); }

std::unique_ptr<Buffer> CpuBackend::buffer(int64_t floats) {
  auto b = std::make_unique<CpuBuffer>();
  b->data.resize(static_cast<size_t>(floats));
  b->at = b->data.data();
  return b;
}

std::unique_ptr<Buffer> CpuBackend::view(Buffer& b, int64_t offset) {
  auto v = std::make_unique<CpuBuffer>();
  v->at = host(b) + offset;
  return v;
}

void CpuBackend::gather_rows(const Buffer& x, const int64_t* rows, int64_t count, int64_t width, Buffer& out) {
  for (int64_t i = 0; i < count; ++i) std::copy_n(host(x) + rows[i] * width, width, host(out) + i * width);
}

void CpuBackend::read(const Buffer& src, int64_t offset, int64_t n, float* dst) const {
  const float* from = host(src) + offset;
  std::copy(from, from + n, dst);
}

void CpuBackend::embed(const int32_t* ids, int64_t n, Buffer& x) {
  const int64_t D = cfg_.n_embd;
  for (int64_t t = 0; t < n; ++t) {
    kernels::get_row(w_.token_embd, ids[t], host(x) + t * D);
    if (cfg_.embed_scale != 1.0f) kernels::scale_inplace(host(x) + t * D, cfg_.embed_scale, D);
  }
}

void CpuBackend::rms_norm(const Buffer& x, int64_t rows, int64_t width, int64_t layer, Vector w, Buffer& out) {
  const auto& scale = weight_vector(w_.layers[static_cast<size_t>(layer)], w);
  kernels::rms_norm_rows(host(x), scale.data(), host(out), rows, width, cfg_.rms_eps);
}

namespace {
// Decode rows apart from prompt rows (kernels::MatmulPath): decode rows each get their one-row
// numbers whatever their count, prompt rows always take the panels, so that neither the neighbours
// of a sequence nor where its prompt is cut into chunks changes a number. (Matrices with a panel copy,
// Q4_0/Q5_0/Q8_0/Q4_K/Q6_K on AVX-512, have one kernel for all; the others' row dots cost a server step of
// 8+ sequences a little against their panels.)
void matmul_by_kind(const WeightMatrix& w, const float* x, int64_t n, float* y, int64_t decode_rows) {
  const int64_t d = std::clamp<int64_t>(decode_rows, 0, n);
  if (d > 0) kernels::matmul(w, x, d, y, w.rows, kernels::MatmulPath::Rows);
  if (n > d) kernels::matmul(w, x + d * w.cols, n - d, y + d * w.rows, w.rows, kernels::MatmulPath::Panels);
}
}  // namespace

void CpuBackend::matmul(int64_t layer, Matrix m, const Buffer& x, int64_t n, Buffer& y, int64_t decode_rows) {
  matmul_by_kind(weight_matrix(w_.layers[static_cast<size_t>(layer)], m), host(x), n, host(y), decode_rows);
}

void CpuBackend::add_bias(int64_t layer, Vector b, int64_t n, Buffer& x) {
  const auto& bias = weight_vector(w_.layers[static_cast<size_t>(layer)], b);
  if (bias.empty()) return;
  const int64_t width = static_cast<int64_t>(bias.size());
  for (int64_t t = 0; t < n; ++t) kernels::add_inplace(host(x) + t * width, bias.data(), width);
}

void CpuBackend::rope_tables(const int32_t* pos, int64_t n, bool sliding, Buffer& cos, Buffer& sin) {
  const auto& freq = sliding ? w_.inv_freq_local : w_.inv_freq_global;
  kernels::rope_tables(pos, n, freq.data(), cfg_.head_dim_k, host(cos), host(sin));
}

void CpuBackend::rope(Buffer& x, int64_t n, int64_t heads, const Buffer& cos, const Buffer& sin) {
  const int64_t dk = cfg_.head_dim_k, half = dk / 2;
  const auto style = cfg_.rope_neox ? kernels::RopeStyle::Neox : kernels::RopeStyle::Normal;
  for (int64_t t = 0; t < n; ++t) {
    float* xt = host(x) + t * heads * dk;
    for (int64_t h = 0; h < heads; ++h) kernels::rope_apply(xt + h * dk, dk, host(cos) + t * half, host(sin) + t * half, style);
  }
}

void CpuBackend::gated_activation(Buffer& gate, const Buffer& up, int64_t n) {
  if (cfg_.activation == Activation::GeluTanhGated) kernels::gelu_tanh_mul(host(gate), host(up), n);
  else kernels::silu_mul(host(gate), host(up), n);
}

void CpuBackend::add(Buffer& x, const Buffer& y, int64_t n) { kernels::add_inplace(host(x), host(y), n); }

std::unique_ptr<KvStorage> CpuBackend::kv_storage(const KvCacheShape& shape) { return std::make_unique<CpuKvStorage>(shape); }

void CpuBackend::append_kv(KvCache& cache, int64_t layer, int64_t n, const Buffer& k, const Buffer& v, const int32_t* pos) {
  cache.append(layer, n, host(k), host(v), pos);
}

void CpuBackend::attention(const AttentionShape& shape, const Buffer& q, const int32_t* pos, int64_t n, const KvCache& cache,
                           int64_t layer, Buffer& out, const ProbabilityRequest& request, Probabilities* probs) {
  std::vector<KvRun> runs;
  for (int64_t h = 0; h < shape.n_head_kv; ++h) runs.push_back(cache.run(layer, h));
  const bool want = probs && request.any();
  if (want) lse_.resize(static_cast<size_t>(n * shape.n_head));
  kernels::attention(shape, host(q), pos, n, runs.data(), host(out), want ? lse_.data() : nullptr);
  if (!want) return;
  kernels::attention_probabilities(shape, host(q), pos, n, runs.data(), lse_.data(), request, *probs);
}

void CpuBackend::logits(const Buffer& x, int64_t first, int64_t rows, float* out, int64_t decode_rows) {
  const int64_t D = cfg_.n_embd;
  normed_.resize(static_cast<size_t>(rows * D));
  kernels::rms_norm_rows(host(x) + first * D, w_.output_norm.data(), normed_.data(), rows, D, cfg_.rms_eps);
  matmul_by_kind(w_.output, normed_.data(), rows, out, decode_rows);
}

}  // namespace kvsqueeze::backend
