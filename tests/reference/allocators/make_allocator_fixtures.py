#!/usr/bin/env python3
"""Reference per-head budgets of the head-adaptive allocators, as upstream computes them.

Reproduces (re-written from reading the upstream sources, not copied) the capacity arithmetic of
  - FFY0/AdaKV  adaptive_snapkv/monkeypatch/snapkv_utils.py  AdaptiveSnapKVCluster.update_kv
  - FYYFU/HeadKV  headkv/snapkv_utils.py  ReasonSnapKVCluster.__init__
  - DiliLazyKV/DiliLazyKV  headkv/snapkv_utils.py  ReasonSnapKVCluster.__init__
with the same libraries and dtypes (numpy float64 means; HeadKV in float64 torch tensors,
DiliLazyKV in float32, AdaKV's counts times a Python float in float32) on the fixed synthetic
inputs in tests/fixtures/allocators/, and writes tests/fixtures/allocators/reference_caps.json.

kvsqueeze allocates per KV head: the HeadKV/DiliLazyKV units are KV heads, each scored as the
mean of its G query heads' means (sum(...) / G, left to right); with G = 1 this is upstream
exactly. Score files are read by key ("layer-head"), layer-major; upstream reads them in file
order, which is the same for these files (written in that order).

Usage (from the repository root; needs numpy and torch, e.g. the reference venv $REFENV):
  $REFENV/bin/python tests/reference/allocators/make_allocator_fixtures.py            # reference only
  $REFENV/bin/python tests/reference/allocators/make_allocator_fixtures.py --inputs   # also rewrite the inputs
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
FIX = os.path.join(ROOT, "tests", "fixtures", "allocators")


# --- inputs --------------------------------------------------------------------------------------

def write_head_scores(path, n_layer, n_head, seed, model):
    """Per-run lists (1-4 runs, InfScore-like: many small, a few large) and some plain numbers."""
    rng = np.random.Generator(np.random.PCG64(seed))
    out = {"_meta": {"model": model, "metric": "infscore", "note": "synthetic scores for allocator tests"}}
    for l in range(n_layer):
        for h in range(n_head):
            runs = int(rng.integers(1, 5))
            vals = rng.beta(0.4, 2.0, size=runs)
            if rng.random() < 0.1:
                vals = vals * 0.0  # heads that never retrieve
            if rng.random() < 0.2:
                out[f"{l}-{h}"] = round(float(vals.mean()), 6)
            else:
                out[f"{l}-{h}"] = [round(float(v), 6) for v in vals]
    with open(path, "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")


def write_adakv_layers(path, seed):
    """Attention-like scores of a few layers (heads x unprotected slots), float32."""
    rng = np.random.Generator(np.random.PCG64(seed))
    layers = []
    for (H, L) in [(4, 60), (8, 200), (2, 33), (8, 512)]:
        # heads with different concentration, like SnapKV's window attention
        conc = rng.uniform(0.2, 3.0, size=H)
        rows = []
        for h in range(H):
            x = rng.gamma(conc[h], 1.0, size=L)
            x = x / x.sum()
            rows.append([float(np.float32(v)) for v in x])
        layers.append({"heads": H, "slots": L, "scores": rows})
    with open(path, "w") as f:
        json.dump({"layers": layers}, f, separators=(",", ":"))
        f.write("\n")


# --- upstream arithmetic ---------------------------------------------------------------------------

def kv_head_means(path, n_layer, n_head, n_head_kv):
    with open(path) as f:
        data = json.load(f)
    q = {}
    for k, v in data.items():
        if k.startswith("_"):
            continue
        l, h = (int(x) for x in k.split("-"))
        q[(l, h)] = np.mean(v if isinstance(v, list) else [v])  # upstream: np.mean(list)
    g = n_head // n_head_kv
    out = []
    for l in range(n_layer):
        for h in range(n_head_kv):
            out.append(sum(q[(l, h * g + j)] for j in range(g)) / g)
    return out  # list of np.float64, layer-major


def headkv(kv_scores, n_layer, n_head_kv, base, beta, temp):
    # ReasonSnapKVCluster.__init__ (FYYFU/HeadKV), base = max_capacity_prompts - window_size
    head_score_list = kv_scores
    head_score_list = torch.tensor(head_score_list / sum(head_score_list))
    head_score_list = torch.pow(head_score_list, temp)
    head_score_list = head_score_list / torch.sum(head_score_list)
    total_attention = head_score_list.reshape(n_layer, n_head_kv)
    total_pool_capacity = (base // beta) * n_layer * n_head_kv
    min_num = base - base // beta
    return torch.round(total_attention * total_pool_capacity + min_num).int().flatten().tolist()


def dililazykv(kv_scores, n_layer, n_head_kv, base, beta, temp):
    # ReasonSnapKVCluster.__init__ (DiliLazyKV/DiliLazyKV)
    t = torch.tensor(kv_scores, dtype=torch.float32)
    t = torch.pow(t, temp)
    sa = t.reshape(n_layer, n_head_kv)
    layer_sums = sa.sum(dim=1, keepdim=True) + 1e-9
    sa_prime = sa + 0.01 * (sa / layer_sums)
    sa_norm = sa_prime / (sa_prime.sum() + 1e-9)
    n = n_layer * n_head_kv
    pool = (base // beta) * n - n * 0.5
    pool = torch.clamp(torch.as_tensor(pool), min=0.0)
    min_num = base - base // beta
    before = sa_norm * pool + min_num
    return torch.round(before + 0.5).int().flatten().tolist()


def adakv_original(scores, base, floor_alpha, normalize):
    # AdaptiveSnapKVCluster.update_kv (FFY0/AdaKV): base = base_capacity - window_size, scores
    # over the slots outside the window, one layer, batch 1.
    attn = torch.tensor(scores, dtype=torch.float32).unsqueeze(0)  # (1, H, L)
    _, heads, length = attn.shape
    floor_capacity = int(base * floor_alpha)
    s, _ = attn.sort(dim=-1, descending=True)
    adaptive = s
    if normalize:
        w = s[..., :base].sum(dim=-1, keepdim=True) / s.sum(dim=-1, keepdim=True)
        adaptive = adaptive * w
    adaptive = adaptive.reshape(1, length * heads)
    idx = torch.topk(adaptive, k=heads * base, dim=-1).indices // length
    counts = torch.zeros((1, heads), dtype=idx.dtype)
    counts.scatter_add_(-1, idx, torch.ones_like(idx, dtype=counts.dtype))
    assert counts.sum().item() == heads * base
    caps = torch.round(counts * (1 - floor_alpha) + floor_capacity).int()
    return counts[0].tolist(), caps[0].tolist()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", action="store_true", help="rewrite the synthetic inputs first")
    a = ap.parse_args()
    files = {
        # name: (layers, query heads, KV heads, seed)
        "head_scores_llama_like.json": (32, 32, 8, 11),
        "head_scores_small.json": (3, 4, 4, 12),
    }
    if a.inputs:
        os.makedirs(FIX, exist_ok=True)
        for name, (nl, nh, _, seed) in files.items():
            write_head_scores(os.path.join(FIX, name), nl, nh, seed, "synthetic-" + name.split(".")[0])
        write_adakv_layers(os.path.join(FIX, "adakv_layers.json"), 13)

    cases = []
    for name, (nl, nh, nkv, _) in files.items():
        kv = kv_head_means(os.path.join(FIX, name), nl, nh, nkv)
        for base in (24, 112, 120, 504, 1000):
            for beta in (1.005, 1.02, 1.2, 1.351, 2.0, 5.0, 20.0):
                for temp in (1.0, 2.0):
                    cases.append({"formula": "headkv", "file": name, "n_layer": nl, "n_head": nh, "n_head_kv": nkv,
                                  "base": base, "beta": beta, "temp": temp,
                                  "caps": headkv(kv, nl, nkv, base, beta, temp)})
                    cases.append({"formula": "dililazykv", "file": name, "n_layer": nl, "n_head": nh, "n_head_kv": nkv,
                                  "base": base, "beta": beta, "temp": temp,
                                  "caps": dililazykv(kv, nl, nkv, base, beta, temp)})
    with open(os.path.join(FIX, "adakv_layers.json")) as f:
        layers = json.load(f)["layers"]
    ada = []
    for li, layer in enumerate(layers):
        for base in (1, 7, layer["slots"] // 4, layer["slots"] // 2, layer["slots"] - 1):
            for alpha in (0.0, 0.2, 0.5, 1.0):
                for normalize in (False, True):
                    counts, caps = adakv_original(layer["scores"], base, alpha, normalize)
                    ada.append({"layer": li, "base": base, "floor_alpha": alpha, "normalize": normalize,
                                "counts": counts, "caps": caps})
    out = {
        "generator": "tests/reference/allocators/make_allocator_fixtures.py",
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__, "torch": torch.__version__},
        "head_file_cases": cases,
        "adakv_cases": ada,
    }
    with open(os.path.join(FIX, "reference_caps.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(cases)} head-file cases, {len(ada)} adakv cases -> tests/fixtures/allocators/reference_caps.json")


if __name__ == "__main__":
    main()
