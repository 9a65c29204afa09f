#!/usr/bin/env bash
# The backend seam holds: only the backends (src/backend/cpu/, src/backend/cuda/), the kernels themselves and
# tests include kernels/ headers or name kernels::. Everything else reaches the machine through
# src/backend/backend.h (the forward pass), src/backend/kv_storage.h (the KV cache's memory),
# src/backend/host_math.h (host-side numeric helpers) or the public headers. The KV cache's raw
# slot storage (SlotBuffer, CpuKvStorage) and the CPU backend's headers are named only inside
# src/backend/ (the device choice point, make_backend.cpp, picks the CPU classes). Prints the
# offending lines and fails when the seam is crossed.
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"
status=0
dirs=(src include tools bench fuzz examples)

# Justified exceptions, one path a line:
#   bench/matmul_bench.cpp     micro-benchmarks of the matmul kernels themselves
#   bench/attention_bench.cpp  micro-benchmarks of the attention kernel itself
#   bench/gpu/cuda_bench.cpp   the CUDA attention kernel's bandwidth against the device's copy
#   bench/decode_step_bench.cpp, bench/random_weights.h   a decode step's matmul kernels, and their inputs
allowed='^(bench/matmul_bench\.cpp|bench/attention_bench\.cpp|bench/gpu/cuda_bench\.cpp|bench/decode_step_bench\.cpp|bench/random_weights\.h):'

hits=$(grep -rnE '#include[[:space:]]*"kernels/|kernels::' "${dirs[@]}" 2>/dev/null \
       | grep -vE '^src/backend/(cpu|cuda)/' | grep -vE "$allowed" || true)
if [ -n "$hits" ]; then
  echo "kernels/ used above the backend seam (move the code into src/backend/cpu/ or use backend/host_math.h):"
  echo "$hits"
  status=1
fi

hits=$(grep -rnE '#include[[:space:]]*"backend/cpu/|SlotBuffer|CpuKvStorage' "${dirs[@]}" 2>/dev/null \
       | grep -vE '^src/backend/(cpu/|make_backend\.cpp:)' || true)
if [ -n "$hits" ]; then
  echo "CPU backend internals or raw KV slot storage used above the backend seam (go through backend/kv_storage.h or KvCache):"
  echo "$hits"
  status=1
fi

[ "$status" = 0 ] && echo "backend seam: ok"
exit "$status"
