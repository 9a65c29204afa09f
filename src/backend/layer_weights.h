#pragma once
// A layer's weights by the seam's names (backend::Matrix, backend::Vector), for every backend.
#include <vector>

#include "backend/backend.h"
#include "kvsqueeze/error.h"
#include "model/model_weights.h"

namespace kvsqueeze::backend {

inline const WeightMatrix& weight_matrix(const LayerWeights& L, Matrix m) {
  switch (m) {
    case Matrix::Q: return L.wq;
    case Matrix::K: return L.wk;
    case Matrix::V: return L.wv;
    case Matrix::O: return L.wo;
    case Matrix::Gate: return L.w_gate;
    case Matrix::Up: return L.w_up;
    case Matrix::Down: return L.w_down;
  }
  throw Error("internal: unknown weight matrix");
}

inline const std::vector<float>& weight_vector(const LayerWeights& L, Vector v) {
  switch (v) {
    case Vector::AttnNorm: return L.attn_norm;
    case Vector::FfnNorm: return L.ffn_norm;
    case Vector::QNorm: return L.q_norm;
    case Vector::KNorm: return L.k_norm;
    case Vector::PostAttnNorm: return L.post_attn_norm;
    case Vector::PostFfwNorm: return L.post_ffw_norm;
    case Vector::BiasQ: return L.bq;
    case Vector::BiasK: return L.bk;
    case Vector::BiasV: return L.bv;
  }
  throw Error("internal: unknown weight vector");
}

}  // namespace kvsqueeze::backend
