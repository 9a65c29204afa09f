// DiliLazyKV (DiliLazyKV/DiliLazyKV headkv/snapkv_utils.py; docs/METHODS.md §4.5): HeadKV's budget
// split with a layer-aware adjustment, exactly as coded upstream (float32). With B, N, s as in
// HeadKV (headkv_press.cpp):
//   S = s^temp;  S' = S + 0.01 S / (sum of S over the heads of its layer + 1e-9)
//   P = S' / (sum S' + 1e-9);  pool = max(0, (B // beta) N - 0.5 N)
//   cap = round(P pool + (B - B // beta) + 0.5)
// Each head keeps its cap best slots by the inner press plus its protected slots; outside parity
// mode the caps are fitted to sum exactly to N B (largest remainder).
#include "kvsqueeze/error.h"
#include "press/head_budget.h"

namespace kvsqueeze {

void register_dililazykv_press() {
  head_budget::register_head_file_press(
      "dililazykv",
      "Per-KV-head budgets from offline head scores (DiliLazyKV, e.g. InfScore): HeadKV's split, each head's score raised by 1% "
       "of its share within its layer; the inner press ranks slots within each head.",
      "The formula as coded upstream (the README's variance-based allocation is not in the code), in float32 as upstream. "
       "Allocates per KV head (N = compressible layers x KV heads, each scored as the mean of its G query heads, converted to "
       "float32; upstream repeats the KV per query head). B = average per-head budget minus the inner press's protected slots "
       "(upstream's 16-token window on top). Caps fitted to sum exactly to N B (largest remainder; at most 1 off upstream's per "
       "head unless a cap exceeds the run); parity=true keeps upstream's raw caps. Sliding-window layers get no budget.",
      head_budget::Formula::DiliLazyKV, 1.351, "floor share: each head gets B - B//beta, the rest is shared by score", "temperature: the scores are raised to this power before the split");
}

}  // namespace kvsqueeze
