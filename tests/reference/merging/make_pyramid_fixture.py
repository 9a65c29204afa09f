#!/usr/bin/env python3
"""Fixture of the seed's pyramidal pairwise pooling (en-jai-neer/kv-cache-compression,
src/compression/sequence_kv_compress.py, `SequenceKVCompressor`; docs/METHODS.md §6.1).

The seed's code is imported from a checkout (or `git archive` export) given on the command line;
nothing of it is vendored. For a few settings (L0, beta, sinks, pooling) the script feeds random
K/V of shape (1, heads, T, d) per layer into the seed's `compress_kv_cache(prefill=True)` exactly
as its `LanguageModel.decode` does, then appends one token per layer at a time and calls
`compress_kv_cache(prefill=False)` after each, recording:

- `windows`: the seed's `all_local_windows`;
- `prefill`: the input K/V per layer and the seed's output K/V and retention-window start;
- `decode`: per step the appended K/V, which layers pooled, the retention-window starts, and for
  each pooled layer (a) `intended`: the seed's decode step with its pooling applied to the
  post-sink region only (docs/METHODS.md §6.1: `compress_decode` calls `compress2d(x, sink, len)`
  but compress2d ignores its start and pools the sinks too), made by replacing the seed's
  `compress_decode` with `cat(sinks, compress2d(x[:, :, sink:], 0, len - sink))` so that the
  seed's own bookkeeping and pooling run; the trajectory continues from this output;
  (b) `seed`: what the unmodified `compress_decode` returns on the same input (not carried on),
  or `seed_error` when it raises (an odd sink count with an even run: the whole run, sinks
  included, is split into pairs of unequal counts).

kvsqueeze's `pyramid_merge` must match `prefill` and `intended`; `seed` minus its pooled sinks
(slots [sink, sink + sink/2) for an even sink) equals `intended` under mean and max pooling
(tests/pyramid_merge_test.cpp). Values are random normals rounded to 1/8 (many ties, for
`best`), float32 throughout.

Usage:
  git --git-dir=/path/to/kv-cache-compression/.git archive HEAD src | tar -x -C /tmp/seed
  /path/to/python tests/reference/merging/make_pyramid_fixture.py --seed-repo /tmp/seed [--commit HASH]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
OUT = os.path.join(REPO, "tests", "fixtures", "merging", "pyramid_seed.json")
FORMAT = "kvsqueeze-pyramid-v1"

# (name, L0, beta, sink, pooling, layers, heads, d, prefill length, decode steps)
CASES = [
    ("mean_uniform", 8, 1.0, 4, "MEAN", 3, 2, 4, 40, 40),
    ("max_pyramid", 6, 0.5, 4, "MAX", 3, 2, 4, 37, 40),
    ("best_pyramid", 5, 0.7, 2, "BEST", 3, 2, 4, 33, 36),
    ("mean_inverted_nosink", 8, 2.0, 0, "MEAN", 3, 2, 4, 41, 30),
    ("best_short_prefill", 16, 1.0, 4, "BEST", 2, 2, 4, 12, 40),
    ("max_odd_sink", 7, 0.8, 3, "MAX", 2, 2, 4, 30, 30),
]


def flat(t: torch.Tensor) -> list:
    return [float(x) for x in t.detach().to(torch.float32).reshape(-1).tolist()]


def rand(gen: torch.Generator, shape) -> torch.Tensor:
    return torch.round(torch.randn(shape, generator=gen, dtype=torch.float32) * 8.0) / 8.0


def commit_of(path: str) -> str | None:
    try:
        return subprocess.check_output(["git", "-C", path, "rev-parse", "HEAD"], text=True, stderr=subprocess.DEVNULL).strip()
    except Exception:
        return None


def run_case(mod, pool_enum, name, l0, beta, sink, pooling, layers, heads, d, t0, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    comp = mod.SequenceKVCompressor(sink, getattr(pool_enum, pooling), l0, beta, layers, 2)
    seed_decode = comp.compress_decode

    def intended_decode(x):  # the decode step on the post-sink region only, with the seed's pooling
        n = x.size(2)
        return torch.cat((comp.slice2d(x, 0, sink), comp.compress2d(comp.slice2d(x, sink, n), 0, n - sink)), dim=2)

    comp.compress_decode = intended_decode
    case = {"name": name, "initial_local_window": l0, "steepness_coefficient": beta, "sink_tokens": sink,
            "seq_pooling_type": pooling.lower(), "n_layer": layers, "n_head_kv": heads, "head_dim": d,
            "windows": list(comp.all_local_windows)}
    kv = [(rand(gen, (1, heads, t0, d)), rand(gen, (1, heads, t0, d))) for _ in range(layers)]
    rws = [sink] * layers
    out, rws = comp.compress_kv_cache(tuple(kv), rws, prefill=True)
    case["prefill"] = {
        "length": t0,
        "k": [flat(k) for k, _ in kv], "v": [flat(v) for _, v in kv],
        "out_length": [k.size(2) for k, _ in out],
        "out_k": [flat(k) for k, _ in out], "out_v": [flat(v) for _, v in out],
        "rws": list(rws),
    }
    cache = [tuple(x) for x in out]
    dec = []
    for _ in range(steps):
        new = [(rand(gen, (1, heads, 1, d)), rand(gen, (1, heads, 1, d))) for _ in range(layers)]
        appended = tuple((torch.cat((k, nk), 2), torch.cat((v, nv), 2)) for (k, v), (nk, nv) in zip(cache, new))
        before = list(rws)
        out, rws = comp.compress_kv_cache(appended, rws, prefill=False)
        step = {"k": [flat(k) for k, _ in new], "v": [flat(v) for _, v in new], "rws": list(rws), "pooled": []}
        for l in range(layers):
            if out[l][0].size(2) != appended[l][0].size(2) or rws[l] != before[l]:
                rec = {"layer": l, "length": out[l][0].size(2), "k": flat(out[l][0]), "v": flat(out[l][1])}
                try:
                    sk, sv = seed_decode(appended[l][0]), seed_decode(appended[l][1])
                    rec.update({"seed_length": sk.size(2), "seed_k": flat(sk), "seed_v": flat(sv)})
                except RuntimeError as e:  # odd sinks: the pairs of the whole run do not line up
                    rec["seed_error"] = str(e).splitlines()[0]
                step["pooled"].append(rec)
        dec.append(step)
        cache = [tuple(x) for x in out]
    case["decode"] = dec
    return case


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed-repo", required=True, help="checkout or export of en-jai-neer/kv-cache-compression (holding src/)")
    ap.add_argument("--commit", help="the seed's commit, when --seed-repo is an export")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.seed_repo))
    from src.compression import sequence_kv_compress as mod  # noqa: E402 (the seed's code)
    from src.enum.sequence_compression import SequenceCompressionPoolingType as pool_enum  # noqa: E402

    cases = [run_case(mod, pool_enum, *c, seed=1000 + i) for i, c in enumerate(CASES)]
    doc = {"format": FORMAT,
           "reference": {"repository": "en-jai-neer/kv-cache-compression", "file": "src/compression/sequence_kv_compress.py",
                         "commit": args.commit or commit_of(args.seed_repo), "torch": torch.__version__},
           "layout": "k/v lists are (heads, length, head_dim) row-major float32 per layer",
           "cases": cases}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out}: {len(cases)} cases, {sum(len(c['decode']) for c in cases)} decode steps, "
          f"{sum(len(s['pooled']) for c in cases for s in c['decode'])} decode poolings")


if __name__ == "__main__":
    main()
