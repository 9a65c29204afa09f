#!/usr/bin/env bash
# Produces docs/QUANTIZATION.md's figures: eviction x quantization on the default model. For each
# KV cache type (keys/values, with the default rotation and centring, plus q8_0/q4_0 stored plainly
# to show what those transforms do), KL divergence against an f16 cache (--reference-kv-type f16)
# and NIAH, for no eviction and snapkv, expected_attention and adakv(expected_attention) at 0.5
# and 0.75. Then scripts/eval/quantization_report.py draws every combination on one picture
# (quality against KV bytes held, Pareto front marked) and writes the table.
# Resumable (cells already in OUT/<type>/*/results.jsonl are skipped). About 90 minutes on 2 cores.
#   scripts/eval/quantization.sh [OUT]   (default: docs/results/quantization)
#   STAGES="kld" scripts/eval/quantization.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
OUT="${1:-docs/results/quantization}"
STAGES="${STAGES:-kld niah}"
PRESSES="snapkv,expected_attention,adakv(expected_attention)"
# name | flags
TYPES="f16|--kv-type f16
bf16|--kv-type bf16
q8_0|--kv-type q8_0
q8_0-plain|--kv-type q8_0 --kv-rotation off --kv-centering off
q8_0-k_f16-v|--cache-type-k q8_0 --cache-type-v f16
f16-k_q4_0-v|--cache-type-k f16 --cache-type-v q4_0
q8_0-k_q4_0-v|--cache-type-k q8_0 --cache-type-v q4_0
q4_0|--kv-type q4_0
q4_0-plain|--kv-type q4_0 --kv-rotation off --kv-centering off"
while IFS='|' read -r name flags; do
  for stage in $STAGES; do
    case "$stage" in
      # shellcheck disable=SC2086  # flags are words
      kld) build/kvsqueeze eval kld -m "$MODEL" --press "$PRESSES" --ratio 0.5,0.75 $flags --reference-kv-type f16 \
             --lengths 2048,4096 --samples 2 --continuation 256 -o "$OUT/$name/kld" >/dev/null ;;
      # shellcheck disable=SC2086
      niah) build/kvsqueeze eval niah -m "$MODEL" --press "$PRESSES" --ratio 0.5,0.75 $flags \
              --lengths 2048,4096 --depths 0,25,50,75,100 -o "$OUT/$name/niah" >/dev/null ;;
      *) echo "unknown stage '$stage' (kld, niah)" >&2; exit 2 ;;
    esac
  done
done <<< "$TYPES"
python3 scripts/eval/quantization_report.py "$OUT"
