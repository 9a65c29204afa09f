#pragma once
// A deliberately naive reference forward pass (llama2.c style) for the llama family (llama,
// mistral, qwen2 biases, qwen3 q/k norms) and gemma3, in double precision over the model's
// dequantized weights, with a dense K/V cache and a caller-supplied visibility mask.
//
// It shares nothing with the engine's forward pass but the weights and the hyper-parameters
// (ModelConfig, the RoPE frequency tables): no kernels other than dequantize_row, no matmul,
// no attention kernel, no KvCache. Tokens are processed one at a time, position t = index t;
// every layer keeps every key and value of every position (dense), and attention of a query
// at position q over key position k of (layer, kv head) happens iff
//     k <= q  and  (layer not sliding or q - k < window)  and  visible(layer, kv_head, q, k).
// A test expresses "these cache slots were evicted" by returning false for them.
//
// Header-only (tests/CMakeLists.txt compiles *_test.cpp only).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <numbers>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/dequantize.h"
#include "kernels/matmul.h"
#include "kvsqueeze/model.h"
#include "model/model_weights.h"

namespace reference {

// visible(layer, kv_head, query_pos, key_pos): whether the query may attend to the key
// (only asked for key_pos <= query_pos, and inside the sliding window on sliding layers).
using Visibility = std::function<bool(int64_t layer, int64_t kv_head, int32_t query_pos, int32_t key_pos)>;

inline bool all_visible(int64_t, int64_t, int32_t, int32_t) { return true; }

// key_channels(layer, kv_head, query_pos, key_pos): the key channels q.k sums over (ascending),
// or nullptr for all of them (ThinK-pruned keys count the others as zero).
using KeyChannels = std::function<const std::vector<int32_t>*(int64_t layer, int64_t kv_head, int32_t query_pos, int32_t key_pos)>;

// How the reference stores cached keys and values.
enum class KvRounding {
  None,  // exact doubles
  F16,   // rounded to float, then to IEEE half (round to nearest even), like an F16 engine cache
};

// Rounds to the nearest IEEE binary16 value (ties to even), independently of kernels/fp16.h:
// the value is first rounded to float, as the engine computes keys and values in fp32.
inline double round_to_f16(double x) {
  const double f = static_cast<double>(static_cast<float>(x));
  if (f == 0.0 || !std::isfinite(f)) return f;
  int e = 0;
  std::frexp(f, &e);                // |f| in [2^(e-1), 2^e)
  const int exp = std::max(e - 1, -14);  // below 2^-14 the spacing is that of subnormals
  const double quantum = std::ldexp(1.0, exp - 10);  // 11 significant bits
  const double r = std::nearbyint(f / quantum) * quantum;  // default rounding: to nearest, ties to even
  return std::fabs(r) > 65504.0 ? std::copysign(INFINITY, r) : r;
}

struct Matrix {  // row-major rows x cols, double
  int64_t rows = 0, cols = 0;
  std::vector<double> a;
  const double* row(int64_t r) const { return a.data() + r * cols; }
};

inline Matrix dequantize(const kvsqueeze::kernels::WeightMatrix& w) {
  Matrix m;
  m.rows = w.rows;
  m.cols = w.cols;
  m.a.resize(static_cast<size_t>(w.rows * w.cols));
  std::vector<float> buf(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    kvsqueeze::kernels::dequantize_row(w.type, w.data + static_cast<size_t>(r) * w.row_bytes, buf.data(), w.cols);
    for (int64_t c = 0; c < w.cols; ++c) m.a[static_cast<size_t>(r * w.cols + c)] = buf[static_cast<size_t>(c)];
  }
  return m;
}

inline std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// out = W x (+ bias)
inline void matvec(const Matrix& w, const std::vector<double>& x, std::vector<double>& out,
                   const std::vector<double>* bias = nullptr) {
  if (static_cast<int64_t>(x.size()) != w.cols) throw std::logic_error("reference matvec: shape mismatch");
  out.assign(static_cast<size_t>(w.rows), 0.0);
  for (int64_t r = 0; r < w.rows; ++r) {
    const double* wr = w.row(r);
    double s = 0.0;
    for (int64_t c = 0; c < w.cols; ++c) s += wr[c] * x[static_cast<size_t>(c)];
    out[static_cast<size_t>(r)] = s + (bias && !bias->empty() ? (*bias)[static_cast<size_t>(r)] : 0.0);
  }
}

// x / rms(x) * w over x[offset, offset + n), in place.
inline void rms_norm(double* x, int64_t n, const std::vector<double>& w, double eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(n) + eps);
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] * inv * w[static_cast<size_t>(i)];
}

// Rotary embedding of one head vector: "normal" rotates adjacent pairs (2i, 2i+1), "neox"
// rotates (i, i + d/2); pair i turns by pos * inv_freq[i].
inline void rope(double* x, int64_t d, int32_t pos, const std::vector<double>& inv_freq, bool neox) {
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double theta = static_cast<double>(pos) * inv_freq[static_cast<size_t>(i)];
    const double c = std::cos(theta), s = std::sin(theta);
    const int64_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    const double x0 = x[a], x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
  }
}

inline double silu(double x) { return x / (1.0 + std::exp(-x)); }
inline double gelu_tanh(double x) {
  const double k = std::sqrt(2.0 / std::numbers::pi);
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

class ReferenceModel {
 public:
  explicit ReferenceModel(const kvsqueeze::Model& model) : cfg_(model.config()) {
    const kvsqueeze::ModelWeights& w = model.weights();
    embd_ = dequantize(w.token_embd);
    output_ = dequantize(w.output);
    output_norm_ = to_double(w.output_norm);
    inv_freq_global_ = to_double(w.inv_freq_global);
    inv_freq_local_ = to_double(w.inv_freq_local);
    for (const auto& L : w.layers) {
      Layer R;
      R.wq = dequantize(L.wq);
      R.wk = dequantize(L.wk);
      R.wv = dequantize(L.wv);
      R.wo = dequantize(L.wo);
      R.w_gate = dequantize(L.w_gate);
      R.w_up = dequantize(L.w_up);
      R.w_down = dequantize(L.w_down);
      R.attn_norm = to_double(L.attn_norm);
      R.ffn_norm = to_double(L.ffn_norm);
      R.q_norm = to_double(L.q_norm);
      R.k_norm = to_double(L.k_norm);
      R.post_attn_norm = to_double(L.post_attn_norm);
      R.post_ffw_norm = to_double(L.post_ffw_norm);
      R.bq = to_double(L.bq);
      R.bk = to_double(L.bk);
      R.bv = to_double(L.bv);
      layers_.push_back(std::move(R));
    }
  }

  const kvsqueeze::ModelConfig& config() const { return cfg_; }

  // Logits of every position: tokens.size() rows of n_vocab, token i at position i. Rows
  // before `logits_from` are left empty (saves the LM head where a test does not look).
  std::vector<std::vector<double>> forward(const std::vector<int32_t>& tokens, const Visibility& visible = all_visible,
                                           KvRounding rounding = KvRounding::None, int64_t logits_from = 0,
                                           const KeyChannels& key_channels = nullptr) const {
    const auto& c = cfg_;
    const int64_t D = c.n_embd, Hq = c.n_head, Hkv = c.n_head_kv, dk = c.head_dim_k, dv = c.head_dim_v;
    const int64_t group = Hq / Hkv, T = static_cast<int64_t>(tokens.size());
    const double eps = c.rms_eps;
    // Dense caches: [layer][position] -> Hkv * dk keys (post-RoPE) / Hkv * dv values.
    std::vector<std::vector<std::vector<double>>> kc(static_cast<size_t>(c.n_layer)), vc(static_cast<size_t>(c.n_layer));
    std::vector<std::vector<double>> logits;
    std::vector<double> x(static_cast<size_t>(D)), h, q, k, v, att(static_cast<size_t>(Hq * dv)), proj, gate, up, scores;

    for (int64_t t = 0; t < T; ++t) {
      const int32_t pos = static_cast<int32_t>(t);
      const int32_t tok = tokens[static_cast<size_t>(t)];
      if (tok < 0 || tok >= embd_.rows) throw std::out_of_range("reference: token id out of range");
      for (int64_t i = 0; i < D; ++i) x[static_cast<size_t>(i)] = embd_.row(tok)[i] * static_cast<double>(c.embed_scale);

      for (int64_t l = 0; l < c.n_layer; ++l) {
        const Layer& L = layers_[static_cast<size_t>(l)];
        const bool sliding = c.layer_sliding[static_cast<size_t>(l)];
        const auto& inv_freq = sliding ? inv_freq_local_ : inv_freq_global_;

        // Attention.
        h = x;
        rms_norm(h.data(), D, L.attn_norm, eps);
        matvec(L.wq, h, q, &L.bq);
        matvec(L.wk, h, k, &L.bk);
        matvec(L.wv, h, v, &L.bv);
        for (int64_t hh = 0; hh < Hq; ++hh) {
          if (c.qk_norm) rms_norm(q.data() + hh * dk, dk, L.q_norm, eps);
          rope(q.data() + hh * dk, dk, pos, inv_freq, c.rope_neox);
        }
        for (int64_t hh = 0; hh < Hkv; ++hh) {
          if (c.qk_norm) rms_norm(k.data() + hh * dk, dk, L.k_norm, eps);
          rope(k.data() + hh * dk, dk, pos, inv_freq, c.rope_neox);
        }
        if (rounding == KvRounding::F16) {
          for (double& e : k) e = round_to_f16(e);
          for (double& e : v) e = round_to_f16(e);
        }
        kc[static_cast<size_t>(l)].push_back(k);
        vc[static_cast<size_t>(l)].push_back(v);

        // Keys each KV head may attend to: causal, the window on sliding layers, the mask.
        std::vector<std::vector<int32_t>> keys(static_cast<size_t>(Hkv));
        for (int64_t kvh = 0; kvh < Hkv; ++kvh)
          for (int32_t kp = 0; kp <= pos; ++kp) {
            if (sliding && pos - kp >= c.sliding_window) continue;
            if (visible(l, kvh, pos, kp)) keys[static_cast<size_t>(kvh)].push_back(kp);
          }
        for (int64_t hh = 0; hh < Hq; ++hh) {
          const int64_t kvh = hh / group;  // grouped-query attention
          const double* qh = q.data() + hh * dk;
          double* out = att.data() + hh * dv;
          std::fill(out, out + dv, 0.0);
          // Scores of visible keys, then a plain softmax.
          const std::vector<int32_t>& seen = keys[static_cast<size_t>(kvh)];
          scores.clear();
          for (int32_t kp : seen) {
            const double* kr = kc[static_cast<size_t>(l)][static_cast<size_t>(kp)].data() + kvh * dk;
            double s = 0.0;
            const std::vector<int32_t>* channels = key_channels ? key_channels(l, kvh, pos, kp) : nullptr;
            if (channels)
              for (int32_t i : *channels) s += qh[i] * kr[i];
            else
              for (int64_t i = 0; i < dk; ++i) s += qh[i] * kr[i];
            scores.push_back(s * static_cast<double>(c.attn_scale));
          }
          if (seen.empty()) continue;  // nothing visible: zero output, as the engine does
          const double m = *std::max_element(scores.begin(), scores.end());
          double sum = 0.0;
          for (double& s : scores) sum += (s = std::exp(s - m));
          for (size_t j = 0; j < seen.size(); ++j) {
            const double p = scores[j] / sum;
            const double* vr = vc[static_cast<size_t>(l)][static_cast<size_t>(seen[j])].data() + kvh * dv;
            for (int64_t i = 0; i < dv; ++i) out[i] += p * vr[i];
          }
        }
        matvec(L.wo, att, proj);
        if (c.post_norms) rms_norm(proj.data(), D, L.post_attn_norm, eps);
        for (int64_t i = 0; i < D; ++i) x[static_cast<size_t>(i)] += proj[static_cast<size_t>(i)];

        // Gated feed-forward.
        h = x;
        rms_norm(h.data(), D, L.ffn_norm, eps);
        matvec(L.w_gate, h, gate);
        matvec(L.w_up, h, up);
        const bool gelu = c.activation == kvsqueeze::Activation::GeluTanhGated;
        for (size_t i = 0; i < gate.size(); ++i) gate[i] = (gelu ? gelu_tanh(gate[i]) : silu(gate[i])) * up[i];
        matvec(L.w_down, gate, proj);
        if (c.post_norms) rms_norm(proj.data(), D, L.post_ffw_norm, eps);
        for (int64_t i = 0; i < D; ++i) x[static_cast<size_t>(i)] += proj[static_cast<size_t>(i)];
      }

      std::vector<double> row;
      if (t >= logits_from) {
        h = x;
        rms_norm(h.data(), D, output_norm_, eps);
        matvec(output_, h, row);
      }
      logits.push_back(std::move(row));
    }
    return logits;
  }

 private:
  struct Layer {
    Matrix wq, wk, wv, wo, w_gate, w_up, w_down;
    std::vector<double> attn_norm, ffn_norm, q_norm, k_norm, post_attn_norm, post_ffw_norm, bq, bk, bv;
  };
  kvsqueeze::ModelConfig cfg_;
  Matrix embd_, output_;
  std::vector<double> output_norm_, inv_freq_global_, inv_freq_local_;
  std::vector<Layer> layers_;
};

}  // namespace reference
