// Q-Filters (arXiv 2503.02812, kvpress QFilterPress): a learned direction f per (layer, KV
// head); s_i = -f . k_i on the cached (post-RoPE) keys. The filters are published per model as
// safetensors (tensor "q_filters", [n_layer, n_head_kv, head_dim]); Hugging Face is not
// reachable from here, so the user gives the file. Filters are in Hugging Face's channel order;
// for llama-family GGUFs (whose q/k rows the converter interleaved) they are permuted to match.
#include <cmath>

#include "io/safetensors.h"
#include "kvsqueeze/error.h"
#include "press/press_registry.h"

namespace kvsqueeze {
namespace {

struct QFilterOptions {
  std::string file;
  bool hf_channel_order = true;
};

class QFilterPress : public ScorerPress {
 public:
  QFilterPress(std::string file, bool hf_order) : file_(std::move(file)), hf_order_(hf_order) {
    filters_ = read_safetensors_tensor(file_, "q_filters");  // errors surface when the press is built
  }
  std::string name() const override { return "qfilter"; }
  LayerScores score(const LayerView& v) override {
    const int64_t d = v.head_dim_k(), hkv = v.n_head_kv();
    const auto& shape = filters_.shape;
    if (shape.size() != 3 || shape[0] != v.config().n_layer || shape[1] != hkv || shape[2] != d)
      throw Error("qfilter: '" + file_ + "' holds filters of shape " + shape_text() + ", this model needs [" +
                  std::to_string(v.config().n_layer) + ", " + std::to_string(hkv) + ", " + std::to_string(d) + "]");
    // GGUF llama keys: channel 2j+s is Hugging Face channel s*d/2+j (rotate-half -> interleaved).
    const bool permute = hf_order_ && !v.config().rope_neox;
    LayerScores out(static_cast<size_t>(hkv));
    for (int64_t h = 0; h < hkv; ++h) {
      const float* f = filters_.values.data() + (v.layer * hkv + h) * d;
      std::vector<float> filter(static_cast<size_t>(d));
      for (int64_t c = 0; c < d; ++c) filter[static_cast<size_t>(c)] = permute ? f[(c % 2) * (d / 2) + c / 2] : f[c];
      const std::vector<float> k = v.keys(h);
      auto& s = out[static_cast<size_t>(h)];
      s.resize(static_cast<size_t>(v.length(h)));
      for (int64_t j = 0; j < v.length(h); ++j) {
        double dot = 0;
        for (int64_t c = 0; c < d; ++c) dot += static_cast<double>(filter[static_cast<size_t>(c)]) * k[static_cast<size_t>(j * d + c)];
        s[static_cast<size_t>(j)] = -static_cast<float>(dot);
      }
    }
    return out;
  }

 private:
  std::string shape_text() const {
    std::string t = "[";
    for (size_t i = 0; i < filters_.shape.size(); ++i) t += (i ? ", " : "") + std::to_string(filters_.shape[i]);
    return t + "]";
  }
  std::string file_;
  bool hf_order_;
  SafetensorsTensor filters_;
};

}  // namespace

void register_qfilter_press() {
  using O = QFilterOptions;
  register_press<O>({"qfilter", "Learned per-head filters: s = -f.k (Q-Filters); needs the published filters as a safetensors file.", {}, 0,
                     "Optional learned scorer: loads the filters from a user-given file (no hub access). kvzap and fastkvzip "
                     "(other learned scorers) are not implemented."},
                    {field("file", &O::file, "safetensors file with tensor q_filters [n_layer, n_head_kv, head_dim] (e.g. nthngdy/<model>_qfilt)"),
                     field("hf_channel_order", &O::hf_channel_order, "filters use Hugging Face's channel order (permuted for llama-family GGUFs)")},
                    [](const O& o) {
                      if (o.file.empty()) throw Error("press 'qfilter' needs its filters: `options` file=PATH.safetensors");
                      return std::make_unique<QFilterPress>(o.file, o.hf_channel_order);
                    });
}

}  // namespace kvsqueeze
