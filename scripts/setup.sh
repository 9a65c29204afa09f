#!/usr/bin/env bash
# Installs everything kvsqueeze needs on a fresh Debian machine and builds it. Idempotent:
# re-running only does what is missing. Debian packages for the build; a Python venv (PyPI)
# only for test tooling (synthetic models) and for obtaining the default model.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${KVSQ_CACHE:-$HOME/.cache/kvsqueeze}"
VENV="$CACHE/venv"
BUILD="${KVSQ_BUILD_DIR:-build}"
PACKAGES=(build-essential cmake ninja-build pkg-config nlohmann-json3-dev libcli11-dev
          libcpp-httplib-dev libcairo2-dev ccache libgtest-dev libgmock-dev libbenchmark-dev libpcre2-dev libicu-dev clang libclang-rt-14-dev libomp-dev
          python3-venv python3-pip python3-dev)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating Python venv for test tooling in $VENV"
  mkdir -p "$CACHE"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import gguf, numpy" 2>/dev/null; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-tools.txt
fi
# The Python package's build backend and test runner (scripts/test.sh builds it without isolation),
# the openai client the server's tests talk through, pandas for kvsqueeze.evaluate's DataFrame.
if ! "$VENV/bin/python" -c "import scikit_build_core, nanobind, pytest, openai, pandas" 2>/dev/null; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-python.txt
fi

# Compiler cache in the cache folder: rebuilding a fresh clone (CI) reuses earlier objects.
export CCACHE_DIR="${CCACHE_DIR:-$CACHE/ccache}" CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
LAUNCHER="-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache"

if [ "${KVSQ_SKIP_BUILD:-0}" != 1 ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release $LAUNCHER ${KVSQ_CMAKE_ARGS:-} >/dev/null
  ninja -C "$BUILD" >/dev/null
  echo "[setup] built $BUILD/kvsqueeze"
fi
