#!/usr/bin/env python3
"""Generate the dequantization fixtures in tests/fixtures/quant/ from gguf-py.

gguf-py's `gguf.quants.dequantize` is what HF transformers uses to load GGUF weights, so it
is the reference our logits are compared against; tests/dequantize_test.cpp asserts that
kernels::dequantize_row reproduces it bit for bit.

Regenerate (deterministic: fixed seed, so the output only changes if gguf-py changes):

    /tmp/refenv/bin/python tests/reference/make_quant_fixtures.py
    # or any python with `pip install gguf numpy`

Output: tests/fixtures/quant/dequant.bin, little-endian:
    magic   b"KVQDQ001"
    u32     number of cases
    per case:
        u32  GGML type number (as in GGUF)
        u32  number of elements n (a multiple of the type's block size)
        u32  number of bytes b of the encoded data
        u8[b]    encoded blocks
        f32[n]   gguf.quants.dequantize(encoded, type)
For every type there are two kinds of case: floats quantized by gguf-py itself (where it can
quantize that type) and random bytes whose fp16 scale fields are forced to finite values
(covering every bit pattern of the quants, negative scales and subnormal scales).
"""
import os
import struct
import sys

import numpy as np
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T

SEED = 20240607
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "quant",
                   "dequant.bin")

# Byte offsets of the fp16 fields inside one block, per type.
FP16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
QUANTIZABLE = {T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0}
TYPES = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K]


def random_finite_fp16(rng: np.random.Generator, count: int) -> np.ndarray:
    """Random fp16 bit patterns that are finite: mostly ordinary scales, some subnormal/zero/huge."""
    kind = rng.integers(0, 10, size=count)
    normal = (rng.standard_normal(count) * 0.05).astype(np.float16).view(np.uint16)
    bits = rng.integers(0, 0x7c00, size=count, dtype=np.uint16) | (rng.integers(0, 2, size=count,
                                                                                 dtype=np.uint16) << 15)
    sub = rng.integers(0, 0x400, size=count, dtype=np.uint16) | (rng.integers(0, 2, size=count,
                                                                                dtype=np.uint16) << 15)
    out = np.where(kind < 6, normal, np.where(kind < 9, bits, sub))
    return out.astype(np.uint16)


def random_blocks(rng: np.random.Generator, qtype: T, n_blocks: int) -> np.ndarray:
    _, type_size = GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in FP16_FIELDS[qtype]:
        data[:, off:off + 2] = random_finite_fp16(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return data.reshape(-1)


def random_plain(rng: np.random.Generator, qtype: T, n: int) -> np.ndarray:
    if qtype == T.F32:
        vals = (rng.standard_normal(n) * 10.0 ** rng.integers(-6, 6, size=n)).astype(np.float32)
        vals[:4] = [0.0, -0.0, np.inf, -np.inf]
        return vals.view(np.uint8)
    # F16 / BF16: random bit patterns, NaNs replaced (their payload conversion is not specified).
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint16)
    if qtype == T.F16:
        nan = (bits & 0x7c00) == 0x7c00
        bits[nan] &= 0xfc00  # -> +-inf
    else:
        nan = ((bits & 0x7f80) == 0x7f80) & ((bits & 0x7f) != 0)
        bits[nan] &= 0xff80
    return bits.view(np.uint8)


def main() -> int:
    rng = np.random.default_rng(SEED)
    cases = []
    for qtype in TYPES:
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        if block_size == 1:
            n = 1000
            cases.append((qtype, n, random_plain(rng, qtype, n)))
        else:
            n_blocks = 24 if block_size == 32 else 6
            cases.append((qtype, n_blocks * block_size, random_blocks(rng, qtype, n_blocks)))
        if qtype in QUANTIZABLE:
            n = 32 * 20
            x = (rng.standard_normal(n) * rng.choice([1e-3, 0.1, 1.0, 30.0], size=n)).astype(np.float32)
            x[:32] = 0.0  # an all-zero block (scale 0)
            enc = quants.quantize(x.reshape(1, -1), qtype)
            cases.append((qtype, n, np.ascontiguousarray(enc).view(np.uint8).reshape(-1)))

    blob = bytearray(b"KVQDQ001")
    blob += struct.pack("<I", len(cases))
    for qtype, n, enc in cases:
        enc = np.ascontiguousarray(enc, dtype=np.uint8)
        ref = quants.dequantize(enc.reshape(1, -1), qtype).astype(np.float32, copy=False).reshape(-1)
        assert ref.size == n, (qtype, ref.size, n)
        blob += struct.pack("<III", int(qtype), n, enc.size)
        blob += enc.tobytes()
        blob += np.ascontiguousarray(ref, dtype="<f4").tobytes()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(bytes(blob))
    print(f"wrote {len(cases)} cases, {len(blob)} bytes to {os.path.normpath(OUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
