// HeadKV (arXiv 2410.19258, FYYFU/HeadKV ReasonSnapKVCluster; docs/METHODS.md §4.4): per-head
// budgets from offline head-importance scores. With B the average per-head budget less the
// inner press's protected slots (its window), N the compressible layers' KV heads and s each KV
// head's score (the mean of its G query heads' means):
//   p = s / sum(s);  p = p^temp / sum(p^temp)
//   cap = round(p (B // beta) N + (B - B // beta))      (Python // and half-to-even round)
// and each head keeps its cap best slots by the inner press plus its protected slots. Outside
// parity mode the caps are fitted to sum exactly to N B (largest remainder) and budget a head
// cannot use goes to the others; the cache really shrinks per head.
#include "kvsqueeze/error.h"
#include "press/head_budget.h"

namespace kvsqueeze {

void register_headkv_press() {
  head_budget::register_head_file_press(
      "headkv",
      "Per-KV-head budgets from offline head-importance scores (HeadKV): a floor B - B//beta for every head, the pool (B//beta) N "
       "shared in proportion to the scores; the inner press ranks slots within each head.",
      "Allocates per KV head (N = compressible layers x KV heads, each scored as the mean of its G query heads; upstream repeats "
       "the KV per query head at G x memory, not reproduced). B = average per-head budget (ratio or budget=) minus the inner "
       "press's protected slots per head (upstream's window on top: max_capacity_prompts = our per-head budget). The caps are "
       "fitted to sum exactly to N B: the rounded caps differ from upstream's by at most 1 per head unless a cap exceeds the "
       "run (then redistributed); parity=true keeps upstream's raw caps. Sliding-window layers are neither compressed nor "
       "given budget. The scores must match the model (layers x query heads).",
      head_budget::Formula::HeadKV, 1.005, "floor share: each head gets B - B//beta, the rest is shared by score (HeadKV swept 1.005-10)", "temperature: the normalised scores are raised to this power and renormalised");
}

}  // namespace kvsqueeze
