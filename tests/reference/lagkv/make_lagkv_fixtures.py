#!/usr/bin/env python3
"""Fixtures from the LagKV repository's own code (AI-Lab-China-Merchants-Bank/LagKV, lag_kv.py).

The upstream `LagKV` class is a transformers `DynamicCache` subclass written for transformers 4.x
(it reads `self._seen_tokens`, `self.key_cache`, ...), which transformers 5 no longer has. So the
script does not instantiate it: it binds upstream's own functions `update`, `_compress_kv_by_lag`,
`_compress_algo` and `_get_states_score` (unchanged, taken from the imported class) to a small
holder object with the attributes they use, and feeds K/V chunk by chunk into `update`, exactly
as a model's attention layer would. The only addition is a wrapper around `_get_states_score`
that records what it returns (the per-partition key and value scores).

Kept positions are recovered by matching every row of upstream's compressed cache (key row and
value row together) with the input rows; inputs are chosen so that rows are unique.

Usage (see README.md in this folder):
  python make_lagkv_fixtures.py --lagkv-repo /path/to/LagKV-checkout [--no-stories]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
OUT_DIR = os.path.join(REPO, "tests", "fixtures", "lagkv")
FORMAT = "kvsqueeze-lagkv-v1"


def fl(x) -> float | str:
    """A float32 value as JSON: the shortest decimal that round-trips to the same float32."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    y = float(np.format_float_positional(np.float32(x), unique=True, trim="-")) if x != 0 else 0.0
    assert np.float32(y) == np.float32(x)  # a reader parsing a double and rounding to float gets x back
    return y


def fl_list(a) -> list:
    return [fl(x) for x in np.asarray(a, dtype=np.float32).reshape(-1)]


def upstream_commit(path: str) -> str | None:
    try:
        return subprocess.check_output(["git", "-C", path, "rev-parse", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except Exception:
        return None


class Runner:
    """Holds the attributes that LagKV's methods read; the methods are upstream's."""

    def __init__(self, LagKV, ratio, sink_size, lag_size, score_v_ratio):
        import torch  # noqa: F401
        self._LagKV = LagKV
        self.ratio = ratio
        self.sink_size = sink_size
        self.lag_size = lag_size
        self.score_v_ratio = score_v_ratio
        self.skip_layer_idx = []
        self.use_then_compress = True
        self._seen_tokens = 0
        self.key_cache, self.value_cache, self._compressed_len = [], [], []
        self.recorded = []

    def update(self, k, v, layer_idx):
        return self._LagKV.update(self, k, v, layer_idx)

    def _compress_kv_by_lag(self, layer_idx):
        return self._LagKV._compress_kv_by_lag(self, layer_idx)

    def _compress_algo(self, layer_idx, base_len):
        self.recorded.append({"base_len": base_len})
        return self._LagKV._compress_algo(self, layer_idx, base_len)

    def _get_states_score(self, base_len, in_size, end_idx, value):
        s = self._LagKV._get_states_score(self, base_len, in_size, end_idx, value)
        r = self.recorded[-1]
        r["end_idx"] = end_idx
        r["k" if "k" not in r else "v"] = s.clone()
        return s


def run_case(LagKV, keys, values, sink, lag, ratio, v_ratio, chunks):
    """keys/values: float32 [H, T, d]. Returns the steps (one per chunk)."""
    import torch
    H, T, d = keys.shape
    assert sum(chunks) == T
    lookup = []  # per head: row bytes -> position
    for h in range(H):
        m = {}
        for t in range(T):
            key = keys[h, t].tobytes() + values[h, t].tobytes()
            assert key not in m, "input rows must be unique"
            m[key] = t
        lookup.append(m)
    r = Runner(LagKV, ratio, sink, lag, v_ratio)
    steps, seen = [], 0
    for n in chunks:
        kc = torch.from_numpy(keys[None, :, seen:seen + n].copy())
        vc = torch.from_numpy(values[None, :, seen:seen + n].copy())
        before = None
        if r.key_cache:
            before = [positions(r, lookup, h) for h in range(H)]
        else:
            before = [[] for _ in range(H)]
        n_rec = len(r.recorded)
        out_k, _ = r.update(kc, vc, 0)
        seen += n
        # use_then_compress: the returned tensors are the uncompressed cache.
        assert out_k.shape[-2] == len(before[0]) + n
        step = {"chunk": n, "seen": seen, "compressed": len(r.recorded) > n_rec,
                "positions": [positions(r, lookup, h) for h in range(H)],
                "prefix_end": r._compressed_len[0]}
        if step["compressed"]:
            rec = r.recorded[-1]
            base, end = rec["base_len"], rec["end_idx"]
            step["base_len"], step["end_idx"] = base, end
            cache_before = [before[h] + list(range(seen - n, seen)) for h in range(H)]
            step["scored_positions"] = [cache_before[h][base:end - lag] for h in range(H)]
            sk, sv = rec["k"][0], rec["v"][0]  # [H, m-1, lag]
            score = sk + sv * v_ratio  # as _compress_algo combines them
            step["scores_k"] = [fl_list(sk[h]) for h in range(H)]
            step["scores_v"] = [fl_list(sv[h]) for h in range(H)]
            step["scores"] = [fl_list(score[h]) for h in range(H)]
            step["k_per_partition"] = (r._compressed_len[0] - base) // (sk.shape[1])
        steps.append(step)
    return steps


def positions(r, lookup, h):
    kc, vc = r.key_cache[0][0, h].numpy(), r.value_cache[0][0, h].numpy()
    return [lookup[h][kc[t].tobytes() + vc[t].tobytes()] for t in range(kc.shape[0])]


def synthetic_cases():
    """(name, sink, lag, ratio, score_v_ratio, chunks, H, d, seed, tweak)."""
    H, d = 4, 8  # stories260K's KV shape, so the C++ test can drive the press on its config

    def const_channel(k, v):
        k[1, 4 + 2 * 8:4 + 3 * 8, 3] = 0.5   # head 1: a key channel constant over partition 2
        v[2, :, 0] = -1.25                   # head 2: a value channel constant everywhere
    cases = [
        ("below_trigger", 4, 8, 0.5, 1.0, [4 + 2 * 8 - 1], None),
        ("at_trigger", 4, 8, 0.5, 1.0, [4 + 2 * 8], None),
        ("remainder", 4, 8, 0.25, 1.0, [4 + 5 * 8 + 3], None),
        ("lag64_default_ratio", 16, 64, 0.5, 1.0, [16 + 3 * 64 + 10], None),
        ("v_ratio_half", 4, 12, 0.75, 0.5, [4 + 4 * 12 + 7], None),
        ("readme_schedule", 16, 16, 0.2, 1.0, [16 + 2 * 16] + [16] * 6 + [5], None),
        ("token_by_token", 2, 4, 0.5, 1.0, [1] * 31, None),
        ("uneven_chunks", 4, 8, 0.375, 1.0, [29, 3, 11, 1, 20, 9, 2], None),
        ("const_channel_nan", 4, 8, 0.5, 1.0, [4 + 4 * 8 + 2], const_channel),
    ]
    out = []
    for i, (name, sink, lag, ratio, vr, chunks, tweak) in enumerate(cases):
        rng = np.random.default_rng(1000 + i)
        T = sum(chunks)
        k = (rng.standard_normal((H, T, d)) * np.arange(1, H + 1)[:, None, None]).astype(np.float32)
        v = rng.standard_normal((H, T, d)).astype(np.float32)
        if tweak:
            tweak(k, v)
        out.append(dict(name=name, sink_size=sink, lag_size=lag, ratio=ratio, score_v_ratio=vr, chunks=chunks,
                        keys=k, values=v))
    return out


def case_json(c, steps, with_kv=True):
    H, T, d = c["keys"].shape
    j = {"name": c["name"], "settings": {"sink_size": c["sink_size"], "lag_size": c["lag_size"], "ratio": c["ratio"],
                                         "score_v_ratio": c["score_v_ratio"]},
         "cr": round(1.0 - c["ratio"], 10), "n_head": H, "T": T, "head_dim": d, "chunks": c["chunks"], "steps": steps}
    if with_kv:
        j["keys"] = [fl_list(c["keys"][h]) for h in range(H)]
        j["values"] = [fl_list(c["values"][h]) for h in range(H)]
    return j


def k_table(LagKV):
    """The kept count per partition that upstream's code produces, int(ratio * lag_size)."""
    import torch
    rows = []
    for lag in [8, 10, 16, 64, 100, 128, 1024]:
        rng = np.random.default_rng(lag)
        k = rng.standard_normal((1, 1, 2 * lag, 2)).astype(np.float32)
        for i in range(1, 100):
            ratio = round(i / 100, 2)
            r = Runner(LagKV, ratio, 0, lag, 1.0)
            r.update(torch.from_numpy(k), torch.from_numpy(k.copy()), 0)
            rows.append({"ratio": ratio, "cr": round(1 - ratio, 2), "lag_size": lag, "k": r._compressed_len[0]})
    return rows


def stories_kv():
    """Post-RoPE K/V of every layer of stories260K on the kvpress fixtures' text (HF, float32)."""
    import torch
    sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
    sys.path.insert(0, os.path.join(REPO, "tests", "reference", "kvpress"))
    import make_logits_fixtures as mlf
    from make_kvpress_fixtures import STORIES_TEXT
    from transformers import DynamicCache
    torch.set_num_threads(1)
    m = mlf.load_model(mlf.STORIES, {"pad_token_id": None})
    m.set_attn_implementation("sdpa")
    tok = mlf.load_tokenizer(mlf.STORIES)
    ids = tok(STORIES_TEXT, return_tensors="pt").input_ids
    cache = DynamicCache(config=m.config)
    with torch.no_grad():
        m(input_ids=ids, past_key_values=cache, use_cache=True)
    kv = [(layer.keys[0].float().numpy().copy(), layer.values[0].float().numpy().copy()) for layer in cache.layers]
    return ids[0].tolist(), kv, mlf


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lagkv-repo", required=True, help="a checkout (or exported tree) of AI-Lab-China-Merchants-Bank/LagKV")
    ap.add_argument("--commit", default=None, help="the upstream commit, when the tree is not a git checkout")
    ap.add_argument("--no-stories", action="store_true", help="skip the stories260K (real K/V) fixture")
    a = ap.parse_args()
    sys.path.insert(0, os.path.abspath(a.lagkv_repo))
    import torch
    from lag_kv import LagKV
    torch.set_num_threads(1)
    commit = a.commit or upstream_commit(a.lagkv_repo)
    ref = {"repository": "AI-Lab-China-Merchants-Bank/LagKV", "file": "lag_kv.py", "commit": commit,
           "torch": torch.__version__, "numpy": np.__version__, "dtype": "float32", "device": "cpu",
           "how": "upstream LagKV.update/_compress_kv_by_lag/_compress_algo/_get_states_score bound to a holder object "
                  "(the DynamicCache base class of transformers 4.x is not needed by them); use_then_compress=True"}

    cases = []
    for c in synthetic_cases():
        steps = run_case(LagKV, c["keys"], c["values"], c["sink_size"], c["lag_size"], c["ratio"], c["score_v_ratio"],
                         c["chunks"])
        cases.append(case_json(c, steps))
        print(f"{c['name']}: {sum(s['compressed'] for s in steps)} compressions, final {len(steps[-1]['positions'][0])} slots")
    write(os.path.join(OUT_DIR, "synthetic.json"), {"format": FORMAT, "reference": ref, "cases": cases})
    write(os.path.join(OUT_DIR, "k_table.json"), {"format": FORMAT, "reference": ref, "rows": k_table(LagKV)})

    if not a.no_stories:
        ids, kv, mlf = stories_kv()
        settings = [("stories_oneshot", 4, 16, 0.5, 1.0, [len(ids)]),
                    ("stories_readme_schedule", 16, 16, 0.2, 1.0, None)]
        layers = []
        for li, (k, v) in enumerate(kv):
            lj = {"layer": li, "keys": [fl_list(k[h]) for h in range(k.shape[0])],
                  "values": [fl_list(v[h]) for h in range(v.shape[0])], "cases": []}
            for name, sink, lag, ratio, vr, chunks in settings:
                if chunks is None:
                    first = sink + 2 * lag
                    chunks = [first] + [lag] * ((len(ids) - first) // lag)
                    if sum(chunks) < len(ids):
                        chunks.append(len(ids) - sum(chunks))
                c = dict(name=name, sink_size=sink, lag_size=lag, ratio=ratio, score_v_ratio=vr, chunks=chunks,
                         keys=k, values=v)
                lj["cases"].append(case_json(c, run_case(LagKV, k, v, sink, lag, ratio, vr, chunks), with_kv=False))
            layers.append(lj)
        write(os.path.join(OUT_DIR, "stories.json"),
              {"format": FORMAT, "reference": ref,
               "model": {"file": os.path.basename(mlf.STORIES), "sha256": mlf.sha256_file(mlf.STORIES)},
               "input": {"ids": ids, "n_tokens": len(ids)},
               "notes": ["K/V of a plain (uncompressed) float32 HF forward, fed to upstream's cache chunk by chunk: this "
                         "checks the cache algorithm on real K/V, not an end-to-end chunked prefill (where later K/V "
                         "would depend on the compressed cache)."],
               "layers": layers})
        print(f"stories: {len(ids)} tokens, {len(layers)} layers")


def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
