#!/usr/bin/env bash
# Produces docs/RESULTS.md's figures: the default model on KL divergence, NIAH (kvpress style and
# passkey) and RULER-style
# tasks, uncompressed and with eight presses at three ratios (one grid per evaluation, each
# sharing one prefill per sample). Resumable: re-running skips the cells already in
# OUT/*/results.jsonl. About 40 minutes on 2 cores.
#   scripts/eval/results.sh [OUT]   (default: docs/results)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-docs/results}"
[ -x build/kvsqueeze ] || scripts/setup.sh
MODEL="$(scripts/get_default_model.sh)"
PRESSES="snapkv,expected_attention,tova,streaming_llm,knorm,lagkv,keydiff,adakv(expected_attention)"
RATIOS="0.25,0.5,0.75"
run() { build/kvsqueeze eval "$@" -m "$MODEL" --press "$PRESSES" --ratio "$RATIOS" >/dev/null; }
run kld --lengths 2048,4096 --samples 2 --continuation 256 -o "$OUT/kld"
run niah --lengths 1024,2048,4096 --depths 0,50,100 -o "$OUT/niah"
run niah --variant passkey --lengths 1024,2048,4096 --depths 0,50,100 -o "$OUT/passkey"
run ruler --lengths 4096 --samples 2 -o "$OUT/ruler"
echo "results in $OUT/{kld,niah,passkey,ruler}: summary.md, summary.csv, plots"
