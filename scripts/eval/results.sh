#!/usr/bin/env bash
# Produces docs/RESULTS.md's figures on the default model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M):
# KL divergence against the full cache, NIAH (depths x lengths up to 8K) and RULER at 4K (all 13
# tasks, qa_1/qa_2 from data/qa/), for no compression and every scorer and allocator of the
# library: the main presses at 0.25/0.5/0.75, every other one at 0.5. One shared prefill per sample
# serves every cell that can share it. Resumable: re-running skips the cells already in
# OUT/*/results.jsonl, so the run can be split over several sittings; STAGES picks evaluations.
#   scripts/eval/results.sh [OUT]      (default: docs/results)
#   STAGES="kld niah" THREADS=1 scripts/eval/results.sh
# Wall time on 2 cores (AVX2, no AVX-512): kld ~15 min, niah ~1 h, ruler ~3 h.
set -euo pipefail
source "$(dirname "$0")/common.sh"
OUT="${1:-docs/results}"
STAGES="${STAGES:-kld niah ruler}"
HEADS="docs/results/head_budgets/qwen05.heads.json"  # scripts/eval/head_budgets.sh writes it

# Every press at 0.5; the main ones also at 0.25 and 0.75. Not here: qfilter (needs learned
# filters for this model, which cannot be downloaded here), think (prunes key channels, not
# tokens: see HEAD_BUDGETS/MERGING for composed uses), pyramid_merge and merging (MERGING.md),
# finch (query-aware: in RULER only, where a question exists).
MAIN="snapkv,expected_attention,tova,streaming_llm,knorm,keydiff,lagkv,adakv(snapkv),adakv(expected_attention)"
REST="random,observed_attention,non_causal_attn,leverage_score,compactor,cur,cap,pyramidkv,duo_attention"
REST+=",kvzip,kvcompose,simlayerkv(lazy_threshold=0.85),critical(expected_attention(use_vnorm=false))"
REST+=",critical_adakv(expected_attention(use_vnorm=false)),global_topk(snapkv),chunkkv(snapkv),block(keydiff)"
if [ -f "$HEADS" ]; then
  REST+=",headkv(snapkv,head_scores=$HEADS,metric=retrieval_reasoning),dililazykv(snapkv,head_scores=$HEADS)"
fi
# One grid per evaluation, so one shared prefill per sample serves all its cells: every press at
# 0.5 (--ratio), the main ones also at 0.25 and 0.75 (PRESS@R entries).
GRID="$MAIN,$REST"
for r in 0.25 0.75; do
  depth=0; entry=""
  for ((i = 0; i < ${#MAIN}; i++)); do  # split MAIN at the commas outside parentheses
    c="${MAIN:i:1}"
    case "$c" in "(") depth=$((depth + 1)) ;; ")") depth=$((depth - 1)) ;; esac
    if [ "$c" = "," ] && [ $depth -eq 0 ]; then GRID+=",$entry@$r"; entry=""; else entry+="$c"; fi
  done
  GRID+=",$entry@$r"
done
run() {  # run KIND ARGS...
  local kind="$1"; shift
  [ -z "${THREADS:-}" ] || set -- "$@" -t "$THREADS"  # e.g. THREADS=1 beside another job
  build/kvsqueeze eval "$kind" -m "$MODEL" --press "$GRID" --ratio 0.5 --grid-memory 8192 "$@" >/dev/null
}
for stage in $STAGES; do
  case "$stage" in
    kld) run kld --lengths 2048,4096 --samples 2 --continuation 256 -o "$OUT/kld" ;;
    niah) run niah --lengths 1024,2048,4096,8192 --depths 0,25,50,75,100 -o "$OUT/niah" ;;
    ruler)
      RULER_TASKS="niah_single_1,niah_single_2,niah_single_3,niah_multikey_1,niah_multikey_2,niah_multikey_3"
      RULER_TASKS+=",niah_multivalue,niah_multiquery,vt,cwe,fwe"
      for tasks in "$RULER_TASKS" "qa_1 --qa-file data/qa/alice_squad.json" "qa_2 --qa-file data/qa/alice_hotpotqa.json"; do
        # shellcheck disable=SC2086  # "TASK --qa-file FILE" splits into its arguments
        run ruler --lengths 4096 --samples 5 --tasks $tasks -o "$OUT/ruler"
        # finch is query-aware: the question is part of its compressed prefill (its own prefill per cell).
        # shellcheck disable=SC2086
        build/kvsqueeze eval ruler -m "$MODEL" --press finch --ratio 0.5 --query-aware --lengths 4096 --samples 5 \
          --tasks $tasks -o "$OUT/ruler" >/dev/null
      done ;;
    *) echo "unknown stage '$stage' (kld, niah, ruler)" >&2; exit 2 ;;
  esac
done
echo "results in $OUT/{$(echo $STAGES | tr ' ' ',')}: summary.md, summary.csv, plots"
