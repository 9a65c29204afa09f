#pragma once
// Head-adaptive budget allocators (docs/METHODS.md §4.3-4.5): the original AdaKV capacity rule
// (FFY0/AdaKV AdaptiveSnapKVCluster), HeadKV (FYYFU/HeadKV ReasonSnapKVCluster) and DiliLazyKV
// (DiliLazyKV/DiliLazyKV headkv/snapkv_utils.py), the head-score files they read (§5.4), and
// the largest-remainder fit that makes per-head budgets sum exactly to the requested total.
// Pure arithmetic, shared by adakv_press.cpp, headkv_press.cpp and dililazykv_press.cpp.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kvsqueeze/press.h"
#include "press/head_scores_file.h"
#include "press/wrapper_util.h"

namespace kvsqueeze::head_budget {

// Python's float floor division a // b (math.floor of the true quotient, corrected as CPython's
// float_floor_div does), which upstream applies to base_capacity // beta.
double py_floordiv(double a, double b);
// Python / torch round(): half to even.
double py_round(double x);

// Integer budgets close to `target` that sum exactly to `total` (clamped to [0, sum(hi)]):
// starting from `caps` clamped to [0, hi], units are added one at a time to the head with room
// whose target exceeds its count the most (ties: the earlier head), or removed from the head
// whose count exceeds its target the most (ties: the later head). When `caps` are the rounded
// targets this is the largest-remainder method; budget a head cannot use (hi) goes to the
// heads that wanted more, in proportion to what they miss.
std::vector<int64_t> fit_to_total(const std::vector<double>& target, std::vector<int64_t> caps, const std::vector<int64_t>& hi,
                                  int64_t total);

// --- AdaKV, original rule (FFY0/AdaKV) -------------------------------------------------------
// One layer: base[h] = B'_h (slots to allocate besides the protected ones), scores[h] the
// unprotected slots' scores of head h. floor_h = floor(B'_h alpha); c_h = head h's entries in
// the layer's top sum(B'_h) scores, all heads pooled (equal scores: the later slot, then the
// later head; with `normalize` each head's scores are first scaled by the mass of its top B'_h
// over its total mass); raw cap_h = round(c_h (1 - alpha) + floor_h) (half to even).
struct AdaKvOriginal {
  std::vector<int64_t> counts;  // c_h
  std::vector<double> target;   // c_h (1 - alpha) + floor_h
  std::vector<int64_t> raw;     // upstream's caps
};
AdaKvOriginal adakv_original_caps(const std::vector<std::vector<float>>& scores, const std::vector<int64_t>& base, double alpha,
                                  bool normalize);

// --- HeadKV and DiliLazyKV --------------------------------------------------------------------
// `scores` holds one importance score per allocation unit (a KV head), layer-major.
struct HeadCaps {
  std::vector<double> target;  // the real-valued cap before rounding
  std::vector<int64_t> raw;    // upstream's caps (rounded half to even)
};
// HeadKV: p = s / sum(s); p = p^temp / sum(p^temp); pool = (B // beta) N; min_n = B - B // beta;
// cap = round(p pool + min_n). Computed in float64 as upstream (numpy / torch.float64).
HeadCaps headkv_caps(const std::vector<double>& scores, int64_t base, double beta, double temp);
// DiliLazyKV (float32, as upstream): S = s^temp; S' = S + 0.01 S / (sum of S over the heads of
// its layer + 1e-9); P = S' / (sum S' + 1e-9); pool = max(0, (B // beta) N - 0.5 N);
// cap = round(P pool + (B - B // beta) + 0.5). `per_layer` units per layer.
HeadCaps dililazykv_caps(const std::vector<double>& scores, int64_t per_layer, int64_t base, double beta, double temp);

// Head-score files: press/head_scores_file.h.

// A wrapper allocating per KV head from a head-score file (headkv, dililazykv): the inner press
// ranks the slots of each head; its protected slots (window) are kept on top of the allocated
// cap. B = (the average per-head budget of the layer) - (its protected slots per head); the
// caps are computed once per (B, run length) over every compressible layer's KV heads.
enum class Formula { HeadKV, DiliLazyKV };
struct HeadFileOptions {
  std::string head_scores;
  std::string metric;  // "" : the file's "layer-head" lists; else _all[metric]
  double beta = 1.005;
  double temp = 1.0;
  bool parity = false;
};
// `name`: the registered press (headkv, dililazykv), for messages.
std::unique_ptr<Press> make_head_file_press(const std::string& name, Formula formula, std::unique_ptr<Press> inner,
                                            const HeadFileOptions& options);
// Registers a head-file press (headkv, dililazykv): its options head_scores, beta (with this
// default and doc), temp and parity, and a factory for `formula`.
void register_head_file_press(const std::string& name, const std::string& doc, const std::string& notes, Formula formula,
                              double beta_default, const std::string& beta_doc, const std::string& temp_doc);
// The caps (allocated slots besides the protected ones) a head-file press gives every KV head of
// the compressible layers, [layer][KV head] (empty rows for sliding-window layers), for base B
// and `available` unprotected slots per head. For tests and reports.
std::vector<std::vector<int64_t>> head_file_caps(Press& press, const Model& model, int64_t base, int64_t available);

}  // namespace kvsqueeze::head_budget
