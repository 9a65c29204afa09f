#!/usr/bin/env bash
# Fills .gpu-carry/ (git-ignored) with what scripts/gpu/check.sh needs on a GPU machine that has
# nvcc, CMake, PyTorch and transformers but no network and no Debian -dev packages. Run here, on
# a machine with Debian's archive and PyPI; then hand `.gpu-carry` to the device run as a carried
# path (about 5 MiB):
#   debs/    Debian packages unpacked there into a private root (never into /): the headers and
#            libraries the engine links (PCRE2, nlohmann-json) and GoogleTest's sources
#   wheels/  gguf (synthetic models) and kvpress with what it imports (scripts/gpu/fetch_carry_wheels.sh)
#   shared/models/stories260K.gguf   the tiny real model the tests use (../shared does not travel)
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu-carry/debs .gpu-carry/shared/models
[ -f .gpu-carry/.gitignore ] || echo '*' > .gpu-carry/.gitignore

# pkgconf: in case the GPU machine has no pkg-config (CMake finds PCRE2 through it).
DEBS=(libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 nlohmann-json3-dev googletest pkgconf pkgconf-bin libpkgconf3)
missing=()
for p in "${DEBS[@]}"; do ls .gpu-carry/debs/"${p}"_*.deb >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  (cd .gpu-carry/debs && apt-get download "${missing[@]}")
fi

cp -u ../shared/models/stories260K.gguf .gpu-carry/shared/models/
scripts/gpu/fetch_carry_wheels.sh > /dev/null
du -sh .gpu-carry
