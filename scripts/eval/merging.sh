#!/usr/bin/env bash
# Produces docs/MERGING.md's figures: merging vs eviction on the default model at equal KV bytes
# held, on KL divergence and NIAH. Value merging (merging(...), cam(...)) keeps exactly the slots
# its inner press keeps, so each pair is at equal bytes by construction; pyramid_merge sets its own
# size (initial_local_window), so it is compared on the score-vs-bytes plots
# (score_vs_kv_held.png). Resumable (cells already in OUT/*/results.jsonl are skipped).
# About 50 minutes on 2 cores.
#   scripts/eval/merging.sh [OUT]   (default: docs/results/merging)
set -euo pipefail
source "$(dirname "$0")/common.sh"
OUT="${1:-docs/results/merging}"
EVICT="snapkv,merging(snapkv),cam(snapkv),streaming_llm,merging(streaming_llm),cam(streaming_llm),knorm,merging(knorm)"
pyramid() {  # pyramid_merge at the given local windows and poolings
  local list=""
  for w in $1; do for p in $2; do
    list+="${list:+,}pyramid_merge(initial_local_window=$w,seq_pooling_type=$p)"
  done; done
  echo "$list"
}
# pyramid_merge ignores --ratio (its thresholds set the size): one ratio, one cell per setting.
build/kvsqueeze eval kld -m "$MODEL" --press "$EVICT" --ratio 0.25,0.5,0.75,0.9 \
  --lengths 2048,4096 --samples 2 --continuation 256 -o "$OUT/kld" >/dev/null
build/kvsqueeze eval kld -m "$MODEL" --press "$(pyramid "256 512" "mean max best weighted_mean")" --ratio 0.5 \
  --lengths 2048,4096 --samples 2 --continuation 256 -o "$OUT/kld" >/dev/null
build/kvsqueeze eval niah -m "$MODEL" --press "snapkv,merging(snapkv),cam(snapkv),streaming_llm,merging(streaming_llm)" \
  --ratio 0.5,0.75,0.9 --lengths 2048,4096 --depths 0,50,100 -o "$OUT/niah" >/dev/null
build/kvsqueeze eval niah -m "$MODEL" --press "$(pyramid "256 512" "mean weighted_mean")" --ratio 0.5 \
  --lengths 2048,4096 --depths 0,50,100 -o "$OUT/niah" >/dev/null
echo "results in $OUT/{kld,niah}: summary.md, summary.csv, plots"
