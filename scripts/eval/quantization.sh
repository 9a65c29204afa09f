#!/usr/bin/env bash
# Produces docs/QUANTIZATION.md's figures: eviction x quantization on the default model. For each
# KV cache type (keys/values, with the default rotation and centring), KL divergence against an
# f16 cache (--reference-kv-type f16) and NIAH, for no eviction and snapkv, expected_attention and
# adakv(expected_attention) at 0.5 and 0.75. Then scripts/eval/quantization_report.py draws every
# combination on one picture (quality against KV bytes held, Pareto front marked) and writes the
# table. (The effect of rotation and centring alone is measured without eviction in
# docs/QUANTIZATION.md's first table.)
# Resumable (cells already in OUT/<type>/*/results.jsonl are skipped). Wall time: see
# docs/QUANTIZATION.md.
#   scripts/eval/quantization.sh [OUT]   (default: docs/results/quantization)
#   STAGES="kld" scripts/eval/quantization.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
OUT="${1:-docs/results/quantization}"
STAGES="${STAGES:-kld niah}"
PRESSES="snapkv,expected_attention,adakv(expected_attention)"
# name | flags
TYPES="${TYPES:-f16|--kv-type f16
q8_0|--kv-type q8_0
q8_0-k_q4_0-v|--cache-type-k q8_0 --cache-type-v q4_0
q4_0|--kv-type q4_0
kivi2|--kv-type kivi2
bf16|--kv-type bf16}"
while IFS='|' read -r name flags; do
  for stage in $STAGES; do
    case "$stage" in
      # shellcheck disable=SC2086  # flags are words
      kld) build/kvsqueeze eval kld -m "$MODEL" --press "$PRESSES" --ratio 0.5,0.75 $flags --reference-kv-type f16 \
             --lengths 2048 --samples 2 --continuation 128 -o "$OUT/$name/kld" >/dev/null ;;
      # shellcheck disable=SC2086
      niah) build/kvsqueeze eval niah -m "$MODEL" --press "$PRESSES" --ratio 0.5,0.75 $flags \
              --lengths 4096 --depths 10,50,90 -o "$OUT/$name/niah" >/dev/null ;;
      *) echo "unknown stage '$stage' (kld, niah)" >&2; exit 2 ;;
    esac
  done
done <<< "$TYPES"
python3 scripts/eval/quantization_report.py "$OUT"
