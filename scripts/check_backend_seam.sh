#!/usr/bin/env bash
# The backend seam holds: only the CPU backend (src/backend/cpu/), the kernels themselves and
# tests include kernels/ headers or name kernels::. Everything else reaches the machine through
# src/backend/backend.h (the forward pass), src/backend/host_math.h (host-side numeric helpers)
# or the public headers. Prints the offending lines and fails when the seam is crossed.
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"

# Justified exceptions, one path a line:
#   bench/matmul_bench.cpp  micro-benchmarks of the matmul kernels themselves
allowed='^(bench/matmul_bench\.cpp):'

hits=$(grep -rnE '#include[[:space:]]*"kernels/|kernels::' src include tools bench fuzz examples 2>/dev/null \
       | grep -vE '^src/backend/cpu/' | grep -vE "$allowed" || true)
if [ -n "$hits" ]; then
  echo "kernels/ used above the backend seam (move the code into src/backend/cpu/ or use backend/host_math.h):"
  echo "$hits"
  exit 1
fi
echo "backend seam: ok"
