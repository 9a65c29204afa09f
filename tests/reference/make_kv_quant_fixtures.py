#!/usr/bin/env python3
"""Generate tests/fixtures/quant/kv_quant.bin: float rows and their Q8_0 / Q4_0 blocks as gguf-py
quantizes them (gguf.quants.quantize, bit-exact with ggml-quants.c's reference).
tests/kv_quantize_test.cpp asserts that kernels::quantize_row_q8_0 / _q4_0, which store the
quantized KV cache, write the same bytes.

Regenerate (deterministic: fixed seed, so the output only changes if gguf-py changes):

    python tests/reference/make_kv_quant_fixtures.py     # any python with `pip install gguf numpy`

Output, little-endian:
    magic   b"KVQKV001"
    u32     number of cases
    per case:
        u32  GGML type number (8 = Q8_0, 2 = Q4_0)
        u32  number of elements n (a multiple of 32)
        f32[n]   the input row
        u32  number of bytes b
        u8[b]    gguf.quants.quantize(row, type)
Rows: Gaussian rows at several scales, rows with one large outlier (the keys of Qwen-like
models), all-zero blocks, exact ties of the largest magnitude with both signs (Q4_0 takes the
first), values on rounding boundaries (x / d = k + 0.5), and subnormal-scale blocks.
"""
import os
import struct

import numpy as np
from gguf import quants
from gguf.constants import GGMLQuantizationType as T

SEED = 20261206
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "quant", "kv_quant.bin")


def rows(rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for scale in (1e-3, 1.0, 30.0, 1e4):
        out.append((rng.standard_normal(128) * scale).astype(np.float32))
    outlier = rng.standard_normal(64).astype(np.float32)
    outlier[5] = 250.0
    out.append(outlier)
    out.append(np.zeros(64, dtype=np.float32))
    tie = rng.standard_normal(32).astype(np.float32)
    tie[3], tie[17] = -4.0, 4.0  # equal magnitudes, negative first
    out.append(tie)
    tie2 = tie.copy()
    tie2[3], tie2[17] = 4.0, -4.0
    out.append(tie2)
    # Multiples of d/2 for d = 127/127 = 1 (Q8_0) and d = 8/-8 (Q4_0): exact rounding boundaries.
    half = (np.arange(32, dtype=np.float32) - 16.0) * 0.5
    half[0] = 127.0
    out.append(half.astype(np.float32))
    half4 = (np.arange(32, dtype=np.float32) - 16.0) * 0.25
    half4[31] = 8.0
    out.append(half4.astype(np.float32))
    out.append((rng.standard_normal(64) * 1e-6).astype(np.float32))  # scales near fp16 subnormals
    return out


def main() -> None:
    rng = np.random.default_rng(SEED)
    cases = []
    for row in rows(rng):
        for qtype in (T.Q8_0, T.Q4_0):
            blocks = quants.quantize(row.reshape(1, -1), qtype).reshape(-1)
            cases.append((int(qtype), row, blocks.astype(np.uint8)))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(b"KVQKV001")
        f.write(struct.pack("<I", len(cases)))
        for qtype, row, blocks in cases:
            f.write(struct.pack("<II", qtype, row.size))
            f.write(row.astype("<f4").tobytes())
            f.write(struct.pack("<I", blocks.size))
            f.write(blocks.tobytes())
    print(f"wrote {len(cases)} cases to {os.path.relpath(OUT)}")


if __name__ == "__main__":
    main()
