#!/usr/bin/env bash
# Downloads into .gpu-carry/wheels/ the wheels that the GPU machine lacks (it has no network), for
# bench/gpu/bench_torch_anchor.py. There, install them with
#   pip install --no-index --no-deps --target /tmp/site .gpu-carry/wheels/*.whl
#   PYTHONPATH=/tmp/site python bench/gpu/bench_torch_anchor.py ...
# and hand `.gpu-carry` to the device run as a carried path (the folder ignores itself).
#
# Wheels, and why each (the GPU machine already has torch, transformers, accelerate, numpy, pandas,
# requests, huggingface-hub, tqdm, pyyaml, ...):
#   kvpress 0.5.5     the reference presses. Its Requires-Dist pins transformers<5.3; installed with
#                     --no-deps, the bench's shims (adapt()) make it run on later 5.x.
#   cachetools        imported by kvpress at load (duo_attention, lukv).
#   fire, termcolor   imported by kvpress at load (expected_attention_with_stats). fire 0.6.x, kvpress's
#                     pin, is published as a source archive only; 0.7.1 is a wheel and imports the same.
#   gguf 0.19.0       GGUF reader (pure Python; numpy, pyyaml, requests, tqdm are there).
# Not carried: datasets (kvpress imports it at load only for presses that fetch data from the hub; it
# pulls in pyarrow, ~40 MiB, so the bench puts a stub in its place when it is missing) and peft
# (declared by kvpress, never imported by it).
#
# Idempotent: a wheel already in the folder is not downloaded again.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=.gpu-carry/wheels
mkdir -p "$DEST"
# Self-ignoring folder: the wheels never end up in a commit.
[ -f .gpu-carry/.gitignore ] || echo '*' > .gpu-carry/.gitignore

WHEELS=(
  kvpress==0.5.5
  cachetools==5.5.2
  fire==0.7.1
  termcolor==3.3.0
  gguf==0.19.0
)

for spec in "${WHEELS[@]}"; do
  name="${spec%%==*}"; ver="${spec##*==}"
  if ls "$DEST"/"${name//-/_}"-"$ver"-*.whl >/dev/null 2>&1; then
    echo "have $spec"
    continue
  fi
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$DEST" "$spec"
  echo "got  $spec"
done

ls -l "$DEST"
du -cb "$DEST"/*.whl | awk 'END { printf "total: %d bytes (%.2f MiB)\n", $1, $1 / 1048576 }'
