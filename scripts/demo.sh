#!/usr/bin/env bash
# The main job: set up, obtain the default model (Qwen2.5-Coder-0.5B-Instruct), and answer
# questions about a long document (chapter I of Alice's Adventures in Wonderland, ~2,700 tokens)
# from the uncompressed KV cache and from caches compressed 2x and 4x, printing the answers, the
# bytes each cache really holds and the speeds. Extra arguments replace the default settings,
# e.g. scripts/demo.sh 'snapkv@0.5+q' 'adakv(snapkv)@0.75+q' (see examples/long_context_qa.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
MODEL="$(scripts/get_model.sh qwen2.5-0.5b-instruct)"
echo "== the model and what its KV cache costs per token"
build/kvsqueeze inspect "$MODEL" | sed -n '2,3p;7p'
echo
echo "== questions about data/demo/alice_chapter1.txt"
build/long_context_qa "$MODEL" data/demo/alice_chapter1.txt data/demo/questions.txt "$@"
