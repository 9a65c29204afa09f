// DiliLazyKV (DiliLazyKV/DiliLazyKV headkv/snapkv_utils.py; ALGORITHMS.md §4.5): HeadKV's budget
// split with a layer-aware adjustment, exactly as coded upstream (float32). With B, N, s as in
// HeadKV (headkv_press.cpp):
//   S = s^temp;  S' = S + 0.01 S / (sum of S over the heads of its layer + 1e-9)
//   P = S' / (sum S' + 1e-9);  pool = max(0, (B // beta) N - 0.5 N)
//   cap = round(P pool + (B - B // beta) + 0.5)
// Each head keeps its cap best slots by the inner press plus its protected slots; outside parity
// mode the caps are fitted to sum exactly to N B (largest remainder).
#include "kvsqueeze/error.h"
#include "press/head_budget.h"
#include "press/press_registry.h"

namespace kvsqueeze {

void register_dililazykv_press() {
  register_wrapper(
      {"dililazykv",
       "Per-KV-head budgets from offline head scores (DiliLazyKV, e.g. InfScore): HeadKV's split, each head's score raised by 1% "
       "of its share within its layer; the inner press ranks slots within each head.",
       {{"head_scores", "string", 0, 0, 0,
         "JSON file of query-head scores keyed \"layer-head\" (a list of per-run scores, averaged, or a number; keys starting with _ "
         "skipped; _meta.model must name the loaded model)", {}, ""},
        {"beta", "float", 1.351, 1, 1e9, "floor share: each head gets B - B//beta, the rest is shared by score", {}, ""},
        {"temp", "float", 1, 0, 1e3, "temperature: the scores are raised to this power before the split", {}, ""},
        {"parity", "bool", 0, 0, 1,
         "upstream's raw caps (rounded, not fitted to the total; unusable budget wasted; no compression when B > L - window)", {}, ""}},
       1,
       "The formula as coded upstream (the README's variance-based allocation is not in the code), in float32 as upstream. "
       "Allocates per KV head (N = compressible layers x KV heads, each scored as the mean of its G query heads, converted to "
       "float32; upstream repeats the KV per query head). B = average per-head budget minus the inner press's protected slots "
       "(upstream's 16-token window on top). Caps fitted to sum exactly to N B (largest remainder; at most 1 off upstream's per "
       "head unless a cap exceeds the run); parity=true keeps upstream's raw caps. Sliding-window layers get no budget."},
      [](const PressOptionValues& o, PressList inner) {
        head_budget::HeadFileOptions h;
        h.head_scores = o.text("head_scores");
        h.beta = o.at("beta");
        h.temp = o.at("temp");
        h.parity = o.at("parity") != 0;
        return head_budget::make_head_file_press(head_budget::Formula::DiliLazyKV, std::move(inner.at(0)), h);
      });
}

}  // namespace kvsqueeze
