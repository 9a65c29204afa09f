#include "model/model_weights.h"

#include <cmath>

#include "backend/host_math.h"
#include "kvsqueeze/error.h"

namespace kvsqueeze {
namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

class TensorLookup {
 public:
  TensorLookup(const GgufFile& file, ModelConfig& config) : file_(file), config_(config) {}

  const GgufTensorInfo* find(const std::string& name) const { return file_.find_tensor(name); }

  const GgufTensorInfo& require(const std::string& name, std::vector<int64_t> shape) {
    const GgufTensorInfo* t = file_.find_tensor(name);
    if (!t) throw Error(file_.path() + ": missing tensor '" + name + "' required by architecture '" + config_.arch_name + "'");
    check(*t, shape);
    return *t;
  }

  void check(const GgufTensorInfo& t, const std::vector<int64_t>& shape) {
    std::vector<int64_t> got = t.shape;
    while (got.size() > shape.size() && got.back() == 1) got.pop_back();
    if (got != shape)
      throw Error(file_.path() + ": tensor '" + t.name + "' has shape " + shape_text(t.shape) + ", expected " + shape_text(shape));
    if (!tensor_type_info(t.type).supported)
      throw Error(file_.path() + ": tensor '" + t.name + "' has type " + tensor_type_info(t.type).name +
                  ", which is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)");
    config_.n_params += t.n_elements();
  }

  WeightMatrix matrix(const std::string& name, int64_t cols, int64_t rows) {
    return view(require(name, {cols, rows}));
  }

  std::vector<float> vector(const std::string& name, int64_t n) { return dequantized(require(name, {n})); }

  std::vector<float> optional_vector(const std::string& name, int64_t n) {
    return find(name) ? vector(name, n) : std::vector<float>{};
  }

  static WeightMatrix view(const GgufTensorInfo& t) {
    WeightMatrix w;
    w.type = t.type;
    w.data = t.data;
    w.cols = t.row_length();
    w.rows = t.n_rows();
    w.row_bytes = tensor_row_bytes(t.type, w.cols);
    return w;
  }

  static std::vector<float> dequantized(const GgufTensorInfo& t) {
    std::vector<float> out(static_cast<size_t>(t.n_elements()));
    host::dequantize_row(t.type, t.data, out.data(), t.n_elements());
    return out;
  }

 private:
  const GgufFile& file_;
  ModelConfig& config_;
};

std::vector<float> rope_inv_freq(int64_t d, float base, float scale) {
  std::vector<float> f(static_cast<size_t>(d / 2));
  for (int64_t i = 0; i < d / 2; ++i)
    f[static_cast<size_t>(i)] = scale * static_cast<float>(std::pow(static_cast<double>(base), -2.0 * static_cast<double>(i) / static_cast<double>(d)));
  return f;
}

}  // namespace

std::unique_ptr<ModelWeights> load_model_weights(const GgufFile& file, ModelConfig& c) {
  TensorLookup t(file, c);
  auto owned = std::make_unique<ModelWeights>();
  ModelWeights& w = *owned;
  c.n_params = 0;
  const GgufTensorInfo* embd = t.find("token_embd.weight");
  if (!embd) throw Error(file.path() + ": missing tensor 'token_embd.weight'");
  if (embd->shape.size() < 2) throw Error(file.path() + ": tensor 'token_embd.weight' must be 2-D, has shape " + shape_text(embd->shape));
  c.n_vocab = embd->shape[1];
  w.token_embd = t.matrix("token_embd.weight", c.n_embd, c.n_vocab);
  w.output_norm = t.vector("output_norm.weight", c.n_embd);
  c.tied_embeddings = t.find("output.weight") == nullptr;
  w.output = c.tied_embeddings ? w.token_embd : t.matrix("output.weight", c.n_embd, c.n_vocab);

  const int64_t q_dim = c.n_head * c.head_dim_k, k_dim = c.n_head_kv * c.head_dim_k, v_dim = c.n_head_kv * c.head_dim_v;
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerWeights L;
    L.attn_norm = t.vector(p + "attn_norm.weight", c.n_embd);
    L.wq = t.matrix(p + "attn_q.weight", c.n_embd, q_dim);
    L.wk = t.matrix(p + "attn_k.weight", c.n_embd, k_dim);
    L.wv = t.matrix(p + "attn_v.weight", c.n_embd, v_dim);
    L.wo = t.matrix(p + "attn_output.weight", c.n_head * c.head_dim_v, c.n_embd);
    L.ffn_norm = t.vector(p + "ffn_norm.weight", c.n_embd);
    L.w_gate = t.matrix(p + "ffn_gate.weight", c.n_embd, c.n_ff);
    L.w_up = t.matrix(p + "ffn_up.weight", c.n_embd, c.n_ff);
    L.w_down = t.matrix(p + "ffn_down.weight", c.n_ff, c.n_embd);
    if (c.qk_norm) {
      L.q_norm = t.vector(p + "attn_q_norm.weight", c.head_dim_k);
      L.k_norm = t.vector(p + "attn_k_norm.weight", c.head_dim_k);
    }
    if (c.qkv_bias) {
      L.bq = t.vector(p + "attn_q.bias", q_dim);
      L.bk = t.vector(p + "attn_k.bias", k_dim);
      L.bv = t.vector(p + "attn_v.bias", v_dim);
    } else {  // llama-family files may still carry biases
      L.bq = t.optional_vector(p + "attn_q.bias", q_dim);
      L.bk = t.optional_vector(p + "attn_k.bias", k_dim);
      L.bv = t.optional_vector(p + "attn_v.bias", v_dim);
    }
    if (c.post_norms) {
      L.post_attn_norm = t.vector(p + "post_attention_norm.weight", c.n_embd);
      L.post_ffw_norm = t.vector(p + "post_ffw_norm.weight", c.n_embd);
    }
    w.layers.push_back(std::move(L));
  }

  w.inv_freq_global = rope_inv_freq(c.head_dim_k, c.rope_base, c.rope_scale);
  w.inv_freq_local = rope_inv_freq(c.head_dim_k, c.rope_base_local, 1.0f);
  // llama3-style frequency factors divide the global frequencies channel-wise.
  if (const GgufTensorInfo* rf = t.find("rope_freqs.weight")) {
    auto factors = t.vector("rope_freqs.weight", c.head_dim_k / 2);
    for (size_t i = 0; i < factors.size(); ++i) w.inv_freq_global[i] /= factors[i];
    (void)rf;
  }
  return owned;
}

}  // namespace kvsqueeze
