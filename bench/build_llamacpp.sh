#!/usr/bin/env bash
# Build llama.cpp (CPU backend) from the llama-cpp-python sdist as the speed
# reference for kvsqueeze. Nothing here is committed or linked into kvsqueeze:
# everything lives in a cache folder outside the repository.
#
# Usage: bench/build_llamacpp.sh [--force] [--jobs N]
#
# Environment:
#   KVSQ_CACHE             cache root (default: $HOME/.cache/kvsqueeze)
#   LLAMACPP_DIR           work folder (default: $KVSQ_CACHE/llama.cpp)
#   LLAMA_CPP_PY_VERSION   llama-cpp-python sdist version (default: 0.3.36,
#                          "latest" asks PyPI for the newest release)
#   JOBS                   parallel build jobs (default: 2, the machine is shared)
#   PYTHON / PIP           interpreter used for `pip download` (default: python3)
#
# Idempotent: the sdist is downloaded once, unpacked once, configured once;
# the build step is a no-op when the binaries are up to date. The last line of
# stdout is the absolute path of the bin folder (so `BIN=$(... | tail -1)` works).
# Progress goes to stderr. A summary (version, commit, flags) is written to
# $LLAMACPP_DIR/build-info.txt and echoed to stderr.
set -euo pipefail

FORCE=0
JOBS="${JOBS:-2}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --force) FORCE=1; shift ;;
        --jobs|-j) JOBS="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "build_llamacpp.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

CACHE="${KVSQ_CACHE:-$HOME/.cache/kvsqueeze}"
WORK="${LLAMACPP_DIR:-$CACHE/llama.cpp}"
VERSION="${LLAMA_CPP_PY_VERSION:-0.3.36}"
PY="${PYTHON:-python3}"

log() { echo "[build_llamacpp] $*" >&2; }
die() { echo "build_llamacpp.sh: error: $*" >&2; exit 1; }

command -v cmake >/dev/null || die "cmake not found"
command -v "$PY" >/dev/null || die "$PY not found"
"$PY" -m pip --version >/dev/null 2>&1 || die "pip not available for $PY"

if [[ "$VERSION" == "latest" ]]; then
    VERSION="$("$PY" -m pip index versions llama-cpp-python 2>/dev/null \
               | sed -n 's/^llama-cpp-python (\(.*\))$/\1/p' | head -1)"
    [[ -n "$VERSION" ]] || die "could not query the latest llama-cpp-python version from PyPI"
fi

mkdir -p "$WORK/sdist"
SDIST="$WORK/sdist/llama_cpp_python-$VERSION.tar.gz"
SRCROOT="$WORK/src/llama_cpp_python-$VERSION"
SRC="$SRCROOT/vendor/llama.cpp"
BUILD="$WORK/build-$VERSION"
# On AMX CPUs GGML_NATIVE compiles ggml's AMX kernels, and GCC 12 miscompiles their tile set-up:
# its _tile_loadconfig (amxtileintrin.h) tells the compiler that ldtilecfg reads 8 bytes of the
# 64-byte configuration, so the stores of the tile shapes are dropped as dead and the first AMX
# matmul faults. clang's builtin is right, so there llama.cpp is built with clang (kvsqueeze works
# around the same GCC bug in kernels/matmul_amx.h). clang spells the feature macros __AMXINT8__ /
# __AMXTILE__ while ggml tests GCC's __AMX_INT8__ / __AMX_TILE__, so those are defined too (else
# ggml silently leaves its AMX code out). LLAMACPP_CC=gcc keeps the default compiler.
COMPILER_ARGS=()
if [[ "${LLAMACPP_CC:-auto}" != gcc ]] && grep -qw amx_tile /proc/cpuinfo 2>/dev/null && command -v clang++ >/dev/null; then
    AMX_MACROS="-D__AMX_TILE__=1 -D__AMX_INT8__=1"
    COMPILER_ARGS=(-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
                   "-DCMAKE_C_FLAGS=$AMX_MACROS" "-DCMAKE_CXX_FLAGS=$AMX_MACROS")
    BUILD="$WORK/build-$VERSION-clang-amx"
    log "AMX CPU: building with clang and ggml's AMX kernels (GCC 12 drops their tile configuration)"
fi
BIN="$BUILD/bin"

# 1. download the sdist (once)
if [[ ! -s "$SDIST" ]]; then
    log "downloading llama-cpp-python==$VERSION sdist from PyPI"
    tmp="$(mktemp -d "$WORK/sdist/dl.XXXXXX")"
    "$PY" -m pip download --no-deps --no-binary :all: \
        "llama-cpp-python==$VERSION" -d "$tmp" >&2 \
      || { rm -rf "$tmp"; die "pip download of llama-cpp-python==$VERSION failed"; }
    f="$(ls "$tmp"/llama_cpp_python-"$VERSION".tar.gz 2>/dev/null || true)"
    [[ -n "$f" ]] || { rm -rf "$tmp"; die "sdist not found after pip download"; }
    mv "$f" "$SDIST"
    rm -rf "$tmp"
else
    log "sdist present: $SDIST"
fi

# 2. unpack (once; the sdist carries .git/modules/vendor/llama.cpp, which the
#    vendored tree's .git file points to, so build-info gets the real commit)
if [[ ! -f "$SRC/CMakeLists.txt" ]]; then
    log "unpacking into $WORK/src"
    rm -rf "$SRCROOT"
    mkdir -p "$WORK/src"
    tar -xzf "$SDIST" -C "$WORK/src"
    [[ -f "$SRC/CMakeLists.txt" ]] || die "sdist has no vendor/llama.cpp"
fi

COMMIT="unknown"
if command -v git >/dev/null && git -C "$SRC" rev-parse HEAD >/dev/null 2>&1; then
    COMMIT="$(git -C "$SRC" rev-parse HEAD)"
    COMMIT_DATE="$(git -C "$SRC" log -1 --format=%cs 2>/dev/null || echo '?')"
    COMMIT_SUBJ="$(git -C "$SRC" log -1 --format=%s 2>/dev/null || echo '?')"
elif [[ -f "$SRCROOT/.git/modules/vendor/llama.cpp/HEAD" ]]; then
    COMMIT="$(head -1 "$SRCROOT/.git/modules/vendor/llama.cpp/HEAD")"
fi

# 3. configure (once, or when forced)
TARGETS=(llama-bench llama-completion llama-simple llama-perplexity llama-server)
if [[ "$FORCE" == 1 ]]; then rm -rf "$BUILD"; fi
if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
    log "configuring (GGML_NATIVE=ON, Release, CPU backend only)"
    GEN=()
    command -v ninja >/dev/null && GEN=(-G Ninja)
    cmake -S "$SRC" -B "$BUILD" "${GEN[@]}" "${COMPILER_ARGS[@]}" \
        -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=ON \
        -DLLAMA_CURL=OFF \
        -DLLAMA_OPENSSL=OFF \
        -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_SERVER=ON \
        -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_BUILD_UI=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF \
        -DLLAMA_BUILD_TOOLS=ON \
        -DLLAMA_BUILD_EXAMPLES=ON \
        -DCMAKE_RUNTIME_OUTPUT_DIRECTORY="$BIN" >&2 \
      || die "cmake configure failed (see above)"
fi

# A folder configured before llama-server was wanted (bench/bench_serving.py) gets it switched on.
if grep -q '^LLAMA_BUILD_SERVER:BOOL=OFF' "$BUILD/CMakeCache.txt"; then
    log "switching on llama-server (LLAMA_BUILD_SERVER=ON, no web UI)"
    cmake -S "$SRC" -B "$BUILD" -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >&2 \
      || die "cmake configure failed (see above)"
fi

# 4. build (no-op when up to date)
need_build=0
for t in "${TARGETS[@]}"; do [[ -x "$BIN/$t" ]] || need_build=1; done
if [[ "$need_build" == 1 || "$FORCE" == 1 ]]; then
    log "building ${TARGETS[*]} with -j$JOBS (slow on 2 cores)"
fi
cmake --build "$BUILD" --config Release -j "$JOBS" --target "${TARGETS[@]}" >&2 \
    || die "build failed (see above)"
for t in llama-bench llama-completion; do
    [[ -x "$BIN/$t" ]] || die "expected binary missing: $BIN/$t"
done

# 5. record what was built
BVER="$("$BIN/llama-completion" --version 2>&1 | grep -E 'version|built with' | tr '\n' ' ' || true)"
{
    echo "llama-cpp-python sdist: $VERSION ($(basename "$SDIST"))"
    echo "llama.cpp commit:       $COMMIT ${COMMIT_DATE:-} ${COMMIT_SUBJ:+\"$COMMIT_SUBJ\"}"
    echo "llama.cpp --version:    $BVER"
    echo "cmake flags:            -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF ${COMPILER_ARGS[*]}"
    echo "compiler:               $(grep -m1 '^CMAKE_CXX_COMPILER:' "$BUILD/CMakeCache.txt" | cut -d= -f2) ($("$(grep -m1 '^CMAKE_CXX_COMPILER:' "$BUILD/CMakeCache.txt" | cut -d= -f2)" --version | head -1))"
    echo "bin:                    $BIN"
} > "$WORK/build-info.txt"
ln -sfn "$BUILD" "$WORK/build"   # stable path: $WORK/build/bin
sed 's/^/[build_llamacpp] /' "$WORK/build-info.txt" >&2
echo "$BIN"
