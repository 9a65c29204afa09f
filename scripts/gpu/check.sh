#!/usr/bin/env bash
# The CUDA backend's check, one command on a GPU machine, from a fresh copy of the tree plus the
# carried .gpu-carry/ (scripts/gpu/prepare_carry.sh): builds the engine with the CUDA backend, the
# GPU tests and the GPU benchmark; runs the tests (CUDA vs CPU backend in one binary), the kernel
# bandwidth benchmark, the engine's prefill/decode speed on synthetic Qwen2.5-0.5B- and
# Llama-3.1-8B-shaped models, and the PyTorch/transformers + kvpress anchor on the same shapes.
# Results go to $OUT (the device run's folder) or build-gpu/results: check.log, gpu_tests.json,
# bench_kernels.jsonl, bench_models.jsonl, anchor.jsonl, summary.md.
#
#   scripts/gpu/check.sh              on the GPU machine (about 8 minutes)
#   scripts/gpu/check.sh --rehearse   here, without a GPU: the same build from the carried
#                                     dependencies and every step; the GPU tests run through the
#                                     CUDA backend compiled for the CPU emulation of CUDA
#                                     (tests/gpu/emulated_*), the benchmarks as tiny CPU runs
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
REHEARSE=0
[ "${1:-}" = "--rehearse" ] && REHEARSE=1
CARRY=$ROOT/.gpu-carry
PY=${KVSQ_CHECK_PYTHON:-python3}  # a Python with numpy (the GPU machine's python3 has it)
BUILD=$ROOT/build-gpu$([ $REHEARSE = 1 ] && echo -rehearse)
RESULTS=${OUT:-$BUILD/results}
mkdir -p "$RESULTS" "$BUILD"
LOG=$RESULTS/check.log
exec > >(tee "$LOG") 2>&1
START=$(date +%s)
# The whole check ends within 8 minutes on the GPU machine (16 cores); a rehearsal on 2 cores
# builds for minutes, so it has no deadline to speak of.
DEADLINE=$(( START + ${KVSQ_CHECK_SECONDS:-$([ $REHEARSE = 1 ] && echo 7200 || echo 470)} ))
step() { echo; echo "=== [$(( $(date +%s) - START ))s] $*"; }
# A step's time limit: its own, or what is left before the deadline (later steps are cut first;
# each writes its results as it goes).
limit() { local left=$(( DEADLINE - $(date +%s) )); [ "$left" -lt "$1" ] && echo $(( left > 5 ? left : 5 )) || echo "$1"; }
[ -d "$CARRY/debs" ] || { echo "missing .gpu-carry: run scripts/gpu/prepare_carry.sh where there is a network"; exit 1; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
nvcc --version | tail -1; cmake --version | head -1; ${CXX:-c++} --version | head -1; "$PY" --version
command -v pkg-config ninja dpkg-deb || true

step "carried dependencies (unpacked into a private root, never into /)"
DEPS=$BUILD/deps
if [ ! -d "$DEPS/usr" ]; then
  mkdir -p "$DEPS"
  for f in "$CARRY"/debs/*.deb; do
    if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$f" "$DEPS" || exit 1
    else (cd "$DEPS" && ar p "$f" "$(ar t "$f" | grep '^data.tar')" | tar -xJ) || exit 1; fi
  done
fi
LIBDIR=$DEPS/usr/lib/x86_64-linux-gnu
export PKG_CONFIG_SYSROOT_DIR=$DEPS PKG_CONFIG_LIBDIR=$LIBDIR/pkgconfig:$DEPS/usr/share/pkgconfig
export LD_LIBRARY_PATH=$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
EXTRA_CMAKE=()
command -v pkg-config >/dev/null || EXTRA_CMAKE+=(-DPKG_CONFIG_EXECUTABLE="$DEPS/usr/bin/pkgconf")
# cuBLAS: the toolkit's, else the one PyTorch's wheels bring.
NVCC_ROOT=$(dirname "$(dirname "$(command -v nvcc)")")
if ! ls "$NVCC_ROOT"/lib64/libcublas.so* "$NVCC_ROOT"/targets/x86_64-linux/lib/libcublas.so* >/dev/null 2>&1; then
  CUBLAS=$(find / -name 'libcublas.so*' -not -path '*/proc/*' 2>/dev/null | sort | head -1)
  echo "no cuBLAS beside nvcc; using $CUBLAS"
  [ -n "$CUBLAS" ] && EXTRA_CMAKE+=(-DCUDA_cublas_LIBRARY="$CUBLAS" -DCMAKE_CXX_FLAGS="-I$(dirname "$(dirname "$CUBLAS")")/include")
fi
SITE=$BUILD/site
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$CARRY"/wheels/*.whl || exit 1
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export KVSQ_SHARED_DIR=$CARRY/shared KVSQ_PYTHON=$PY

step "build (engine + CUDA backend, GPU tests, GPU benchmark)"
GENERATOR=(); command -v ninja >/dev/null && GENERATOR=(-G Ninja)
cmake -S . -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release -DKVSQ_CUDA=ON -DKVSQ_BUILD_TOOLS=OFF \
  -DKVSQ_BUILD_TESTS=ON -DKVSQ_BUILD_BENCH=ON -DCMAKE_DISABLE_FIND_PACKAGE_GTest=ON -DCMAKE_DISABLE_FIND_PACKAGE_benchmark=ON \
  -DKVSQ_GTEST_SOURCE_DIR="$DEPS/usr/src/googletest" -Dnlohmann_json_DIR="$DEPS/usr/share/cmake/nlohmann_json" \
  "${EXTRA_CMAKE[@]}" ${KVSQ_CHECK_CMAKE_ARGS:-} > "$BUILD/configure.log" 2>&1 || { tail -30 "$BUILD/configure.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" --target kvsq_gpu_tests kvsq_cuda_bench > "$BUILD/build.log" 2>&1 || { grep -B2 -A12 -m3 "error" "$BUILD/build.log"; exit 1; }
TESTS=$BUILD/tests/gpu/kvsq_gpu_tests
BENCH=$BUILD/bench/gpu/kvsq_cuda_bench

step "GPU tests: the CUDA backend against the CPU backend"
if [ $REHEARSE = 1 ]; then export KVSQ_GPU_TESTS_EMULATED=1; fi
timeout "$(limit 150)" "$TESTS" --gtest_output=json:"$RESULTS/gpu_tests.json" | grep -v "^\[ RUN\|^\[       OK"
TESTS_RC=${PIPESTATUS[0]}
unset KVSQ_GPU_TESTS_EMULATED

step "decode attention bandwidth vs the device's copy bandwidth"
if [ $REHEARSE = 1 ]; then
  "$BENCH" kernels; echo "(rehearsal: exit $? expected 2, no device)"; : > "$RESULTS/bench_kernels.jsonl"
else
  timeout "$(limit 60)" "$BENCH" kernels | tee "$RESULTS/bench_kernels.jsonl"
fi

MODELS=$BUILD/models; mkdir -p "$MODELS"
if [ $REHEARSE = 1 ]; then SHAPES=(tiny); else SHAPES=(qwen2.5-0.5b llama3.1-8b); fi
: > "$RESULTS/bench_models.jsonl"; : > "$RESULTS/anchor.jsonl"
for shape in "${SHAPES[@]}"; do
  step "synthetic $shape model"
  arch=qwen2; type=mixed
  [ "$shape" = llama3.1-8b ] && { arch=llama; type=Q4_K; }
  [ -f "$MODELS/$shape.gguf" ] || timeout "$(limit 90)" "$PY" scripts/synth/make_synthetic_gguf.py --arch $arch --shape "$shape" \
    --type $type --seed 1 -o "$MODELS/$shape.gguf" > /dev/null || { echo "generation failed"; continue; }
  ls -l "$MODELS/$shape.gguf"

  step "engine speed, $shape: prefill and decode tok/s, ratios 0/0.5/0.75 (expected_attention)"
  if [ $REHEARSE = 1 ]; then
    "$BENCH" model "$MODELS/$shape.gguf" --device cpu --ctx 256,512 --decode 8 --chunk 128 --label "$shape" | tee -a "$RESULTS/bench_models.jsonl"
  else
    timeout "$(limit 150)" "$BENCH" model "$MODELS/$shape.gguf" --device cuda --ctx 4096,32768 --label "$shape" | tee -a "$RESULTS/bench_models.jsonl"
  fi
  step "anchor, $shape: PyTorch/transformers (SDPA) + kvpress"
  if [ $REHEARSE = 1 ]; then
    ${KVSQ_TORCH_PYTHON:-python3} bench/gpu/bench_torch_anchor.py --device cpu --shape "$shape" --contexts 256,512 --ratios 0,0.5,0.75 \
      --decode-tokens 8 | tee -a "$RESULTS/anchor.jsonl"
  else
    timeout "$(limit 120)" "$PY" bench/gpu/bench_torch_anchor.py --device cuda --shape "$shape" --contexts 4096,32768 --ratios 0,0.5,0.75 \
      --decode-tokens 64 | tee -a "$RESULTS/anchor.jsonl"
  fi
done

step "summary"
"$PY" bench/gpu/summarize.py "$RESULTS" | tee "$RESULTS/summary.md"
echo "GPU tests exit code: $TESTS_RC"
exit "$TESTS_RC"
