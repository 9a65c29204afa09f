#!/usr/bin/env bash
# The main job: set up, obtain the default model, generate from a prompt, and inspect the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
MODEL="$(scripts/get_default_model.sh)"
BIN=build/kvsqueeze
PROMPT="${KVSQ_DEMO_PROMPT:-The old lighthouse keeper climbed the stairs one last time and}"

echo "== kvsqueeze inspect (the model and what its KV cache costs per token)"
"$BIN" inspect "$MODEL"
echo
echo "== kvsqueeze generate (greedy, streaming)"
"$BIN" generate -m "$MODEL" -p "$PROMPT" -n 48
echo
echo "== the cache after generation (generate --json: bytes held, per layer x KV head lengths)"
SUMMARY='
import json, sys
r = json.load(sys.stdin)
print("prompt tokens :", len(r["prompt_tokens"]), " generated:", len(r["output_tokens"]))
print("text          :", repr(r["text"]))
print("kv_bytes_held :", r["kv_bytes_held"], " kv_bytes_full:", r["kv_bytes_full"])
print("kv_lengths    :", " ".join("L%d=%s" % (i, "/".join(map(str, h))) for i, h in enumerate(r["kv_lengths"])))
t = r["timings"]
print("timings       : prefill %.1f tok/s, decode %.1f tok/s; peak RSS %.1f MiB" % (t["prefill_tok_s"], t["decode_tok_s"], r["peak_rss_bytes"] / 2**20))
'
"$BIN" generate -m "$MODEL" -p "$PROMPT" -n 16 --json | python3 -c "$SUMMARY"
echo
echo "== the same with the context compressed by SnapKV, half of it removed (global layers; the"
echo "   sliding-window layers of Gemma 3 keep their window)"
"$BIN" generate -m "$MODEL" -p "$PROMPT" -n 16 --press snapkv --ratio 0.5 --press-opt window_size=4 --json | python3 -c "$SUMMARY"
