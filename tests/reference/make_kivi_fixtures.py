#!/usr/bin/env python3
"""Generate tests/fixtures/quant/kivi2.bin: a numpy reference of KIVI's 2-bit quantization as
kvsqueeze stores it (kernels/kivi_quantize.h), written from the formulas of jy-yuan/KIVI
(quant/new_pack.py: min-max asymmetric quantization, values per token, keys per channel):

    mn = min x, scale = (max x - mn) / 3   (float32, then both stored as float16)
    q  = rint(clip((x - mn16) / scale16, 0, 3))   (0 when scale16 is 0; ties to even)
    x' = q * scale16 + mn16                (float32, each operation rounded)

tests/kivi_quantize_test.cpp asserts that kernels::quantize_row_kivi2 / quantize_group_kivi2
write the same bytes and that dequantizing gives the same floats.

Regenerate (deterministic: fixed seed):

    python tests/reference/make_kivi_fixtures.py     # any python with numpy

Output, little-endian:
    magic   b"KVQKIVI1"
    u32     number of cases
    per case:
        u32  kind: 0 = value rows (per token, blocks of 32 channels), 1 = a key group (32 slots, per channel)
        u32  d, the channels of a row (a multiple of 32)
        u32  rows: 1 for a value row, 32 for a key group
        f32[rows * d]  the input
        u32  number of bytes b
        u8[b]          value row: d/32 blocks {f16 scale, f16 min, 8 bytes of codes};
                       key group: d f16 scales, d f16 minima, then 32 rows of d/4 bytes of codes
        f32[rows * d]  what the stored bytes dequantize to
Codes pack four a byte, element j in bits 2 * (j % 4) of byte j / 4.
"""
import os
import struct

import numpy as np

SEED = 20261206
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "quant", "kivi2.bin")
F32 = np.float32


def params(lo: np.ndarray, hi: np.ndarray):
    mn = lo.astype(np.float16)
    scale = ((hi.astype(F32) - lo.astype(F32)) / F32(3)).astype(np.float16)
    return scale, mn


def codes_of(x: np.ndarray, scale: np.ndarray, mn: np.ndarray) -> np.ndarray:
    s, m = scale.astype(F32), mn.astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.clip((x.astype(F32) - m) / s, F32(0), F32(3))
    q = np.rint(t)
    q = np.where(s == 0, F32(0), q)
    return q.astype(np.uint8)


def dequant(q: np.ndarray, scale: np.ndarray, mn: np.ndarray) -> np.ndarray:
    return (q.astype(F32) * scale.astype(F32)).astype(F32) + mn.astype(F32)


def pack(q: np.ndarray) -> bytes:
    q = q.reshape(-1, 4).astype(np.uint8)
    return bytes((q[:, 0] | (q[:, 1] << 2) | (q[:, 2] << 4) | (q[:, 3] << 6)).astype(np.uint8))


def value_row(x: np.ndarray):
    blocks = x.reshape(-1, 32)
    out, back = b"", []
    for b in blocks:
        scale, mn = params(b.min(), b.max())
        q = codes_of(b, scale, mn)
        out += scale.tobytes() + mn.tobytes() + pack(q)
        back.append(dequant(q, scale, mn))
    return out, np.concatenate(back)


def key_group(x: np.ndarray):  # x: 32 x d
    scale, mn = params(x.min(axis=0), x.max(axis=0))
    q = codes_of(x, scale, mn)
    out = scale.tobytes() + mn.tobytes() + b"".join(pack(row) for row in q)
    return out, dequant(q, scale, mn)


def value_rows(rng):
    out = [(rng.standard_normal(128) * s).astype(F32) for s in (1e-3, 1.0, 40.0)]
    out.append(np.zeros(64, dtype=F32))
    out.append(np.full(32, 2.5, dtype=F32))  # a constant block: scale 0
    # Values on the rounding boundaries: min 0, max 3 -> scale 1, x = k + 0.5 (ties to even).
    b = np.array([0.0, 3.0] + [0.5, 1.5, 2.5, 1.0, 2.0, 0.25, 2.75] * 4 + [0.5, 1.5], dtype=F32)[:32]
    out.append(b)
    outlier = rng.standard_normal(64).astype(F32)
    outlier[7] = -300.0
    out.append(outlier)
    return out


def key_groups(rng):
    out = []
    for d, s in ((64, 1.0), (128, 20.0)):
        out.append((rng.standard_normal((32, d)) * s).astype(F32))
    bias = (rng.standard_normal((32, 64)) * 0.5).astype(F32)
    bias[:, 3] += 180.0  # a Qwen-like bias channel: large and nearly constant
    bias[:, 9] = -7.0    # an exactly constant channel: scale 0
    out.append(bias)
    return out


def main():
    rng = np.random.default_rng(SEED)
    cases = []
    for x in value_rows(rng):
        data, back = value_row(x)
        cases.append((0, x.size, 1, x, data, back))
    for x in key_groups(rng):
        data, back = key_group(x)
        cases.append((1, x.shape[1], 32, x, data, back))
    with open(OUT, "wb") as f:
        f.write(b"KVQKIVI1")
        f.write(struct.pack("<I", len(cases)))
        for kind, d, rows, x, data, back in cases:
            f.write(struct.pack("<III", kind, d, rows))
            f.write(np.ascontiguousarray(x, dtype="<f4").tobytes())
            f.write(struct.pack("<I", len(data)))
            f.write(data)
            f.write(np.ascontiguousarray(back, dtype="<f4").tobytes())
    print(f"wrote {len(cases)} cases to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
