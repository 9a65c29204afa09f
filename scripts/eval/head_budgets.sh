#!/usr/bin/env bash
# Produces docs/HEAD_BUDGETS.md's figures: at the same total kv_bytes_held (the same ratio: every
# allocator's per-head budgets sum to the uniform total), uniform snapkv vs adakv(snapkv) vs
# headkv/dililazykv from the default model's own head profile, on KL divergence and
# NIAH; plus KL divergence on stories260K, whose layers have 4 KV heads each (Gemma 3 270M has 1).
# Resumable (cells already in OUT/*/results.jsonl are skipped). About 60 minutes on 2 cores.
#   scripts/eval/head_budgets.sh [OUT]   (default: docs/results/head_budgets)
set -euo pipefail
source "$(dirname "$0")/common.sh"
OUT="${1:-docs/results/head_budgets}"
STORIES="../shared/models/stories260K.gguf"
mkdir -p "$OUT"
HEADS="$OUT/qwen05.heads.json"
# The head profile: DiliLazyKV's three needles at 3 lengths x 9 depths (81 runs, ~40 minutes on 2 AVX2 cores);
# interrupted, it resumes from the runs kept in $HEADS.partial.jsonl.
[ -f "$HEADS" ] || build/kvsqueeze profile-heads -m "$MODEL" -o "$HEADS" --lengths 1024,2048,3072 --depths 2:98:9 -q
[ -f "$OUT/stories.heads.json" ] ||
  build/kvsqueeze profile-heads -m "$STORIES" -o "$OUT/stories.heads.json" --lengths 300,400,450 --depths 2:98:9 --gate none --max-new-tokens 16 -q
presses() { echo "snapkv,adakv(snapkv),adakv(snapkv,rule=original),headkv(snapkv,head_scores=$1),headkv(snapkv,head_scores=$1,metric=retrieval_reasoning),dililazykv(snapkv,head_scores=$1)"; }
RATIOS="0.25,0.5,0.75,0.9"
build/kvsqueeze eval kld -m "$MODEL" --press "$(presses "$HEADS")" --ratio "$RATIOS" \
  --lengths 2048,4096 --samples 2 --continuation 256 -o "$OUT/kld" >/dev/null
build/kvsqueeze eval niah -m "$MODEL" --press "$(presses "$HEADS")" --ratio "$RATIOS" \
  --lengths 2048,4096 --depths 0,25,50,75,100 -o "$OUT/niah" >/dev/null
build/kvsqueeze eval kld -m "$STORIES" --press "$(presses "$OUT/stories.heads.json")" --ratio "$RATIOS" \
  --lengths 384 --samples 8 --continuation 96 -o "$OUT/stories_kld" >/dev/null
echo "results in $OUT/{kld,niah,stories_kld}: summary.md, summary.csv, plots"
