#!/usr/bin/env python3
"""Reference outputs of kvpress's merging presses (MergingPress.merge and CAMPress.compress).

Calls the installed kvpress (0.5.x) directly on seeded random tensors and records what it returns,
so that tests/merging_press_test.cpp and tests/cam_press_test.cpp can compare kvsqueeze's merging
arithmetic to upstream's (fp32 tolerance). Writes tests/fixtures/merging/merging.json and
tests/fixtures/merging/cam.json.

MergingPress: merge(keys, values, indices) on (1, H, L, D) fp32 tensors, `indices` the top-n_kept of
random scores (topk order, as MergingPress.compress passes them), for several shapes, similarity
thresholds and merge fractions (including fractions whose torch.quantile lands on -inf and gives
NaN, or -inf), zero keys (norm clamp) and zero values.

CAMPress: compress(module, hidden_states, keys, values, attentions, kwargs) with a scorer press that
returns given scores (identical or random per head) and given cumulative attentions Abar. In the
"exact" cases the evicted slots get Abar 0 or 1e6 and the kept ones Abar in (0.01, 1], so that
every merge probability is exactly 0 or 1 (the Bernoulli draws are then deterministic). In the
"random" cases torch.bernoulli is wrapped to record the probabilities it is given and the mask it
draws (seeded), and both are written down.

Usage (from the repository root, with the reference venv that has torch + kvpress):
  $REFENV/bin/python tests/reference/merging/make_merge_fixture.py
"""
import json
import os
import types

import torch

from kvpress.presses.cam_press import CAMPress
from kvpress.presses.merging_press import MergingPress
from kvpress.presses.scorer_press import ScorerPress

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
FIX = os.path.join(ROOT, "tests", "fixtures", "merging")


def f32(x):
    """A float32 value as the shortest decimal that reads back to it (9 significant digits)."""
    return float("%.9g" % x)


def flat(t):
    return [f32(x) for x in t.reshape(-1).tolist()]


class GivenScores(ScorerPress):
    """A scorer returning fixed scores (1, H, L)."""

    def __init__(self, scores):
        super().__init__(compression_ratio=0.0)
        self.scores = scores

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        return self.scores.clone()


def merging_cases():
    cases = []
    # (seed, H, L, D, n_kept, threshold, fraction, special)
    specs = [
        (1, 2, 12, 4, 5, 0.0, 1.0, ""),
        (2, 4, 40, 8, 16, 0.0, 1.0, ""),
        (3, 4, 40, 8, 16, 0.2, 1.0, ""),
        (4, 3, 64, 16, 20, 0.5, 1.0, ""),
        (5, 4, 40, 8, 16, 0.0, 0.75, ""),
        (6, 4, 41, 8, 11, 0.0, 0.5, ""),
        (7, 2, 33, 8, 9, 0.0, 0.3, ""),
        (8, 4, 40, 8, 16, 0.3, 0.75, ""),  # quantile among -inf: NaN or -inf thresholds
        (9, 4, 50, 8, 10, 0.25, 0.6, ""),
        (10, 2, 24, 8, 8, 0.35, 0.9, ""),
        (11, 2, 20, 4, 6, 0.0, 1.0, "zeros"),  # zero keys (norm clamp) and zero values
        (12, 4, 30, 8, 29, 0.0, 0.5, ""),  # one evicted slot per head
        (13, 1, 16, 4, 16, 0.0, 1.0, ""),  # nothing evicted
        (14, 2, 64, 8, 8, 0.1, 0.25, "clustered"),  # similar keys: many strong matches
    ]
    for seed, H, L, D, n_kept, thr, frac, special in specs:
        g = torch.Generator().manual_seed(seed)
        if special == "clustered":
            centres = torch.randn(1, H, 4, D, generator=g)
            pick = torch.randint(0, 4, (1, H, L), generator=g)
            keys = centres.gather(2, pick.unsqueeze(-1).expand(-1, -1, -1, D)) + 0.3 * torch.randn(1, H, L, D, generator=g)
        else:
            keys = torch.randn(1, H, L, D, generator=g)
        values = torch.randn(1, H, L, D, generator=g)
        if special == "zeros":
            keys[0, 0, 3] = 0.0
            keys[0, 1, 7] = 0.0
            values[0, 0, 2] = 0.0
            values[0, 1, 5] = 0.0
            values[0, 1, 9] = 0.0
        scores = torch.rand(1, H, L, generator=g)
        indices = scores.topk(n_kept, dim=-1).indices
        press = MergingPress(press=GivenScores(scores), similarity_threshold=thr, merge_fraction=frac)
        out_keys, out_values = press.merge(keys.clone(), values.clone(), indices)
        assert torch.equal(out_keys, keys)
        cases.append({
            "name": f"seed{seed}_H{H}_L{L}_D{D}_kept{n_kept}_thr{thr}_frac{frac}{'_' + special if special else ''}",
            "H": H, "L": L, "D": D, "similarity_threshold": thr, "merge_fraction": frac,
            "keys": flat(keys), "values": flat(values),
            "indices": [[int(i) for i in row] for row in indices[0].tolist()],
            "out_values": flat(out_values),
        })
    return cases


def cam_cases():
    cases = []
    # (seed, H, L, D, target, merge_budget, k, mode, tied)
    specs = [
        (21, 2, 40, 8, 24, 4, 100, "exact", False),  # k >= evicted: every evicted slot is a candidate
        (22, 4, 60, 8, 30, 6, 10, "exact", False),   # the k best evicted
        (23, 2, 50, 4, 20, 32, 5, "exact", False),   # windows longer than what follows
        (24, 3, 45, 8, 25, 3, 7, "exact", True),     # tied scores among the evicted: later first
        (25, 2, 64, 8, 32, 8, 64, "random", False),
        (26, 4, 48, 8, 24, 5, 12, "random", False),
        (27, 2, 30, 4, 12, 4, 3, "random", True),
    ]
    for seed, H, L, D, target, budget, k, mode, tied in specs:
        g = torch.Generator().manual_seed(seed)
        keys = torch.randn(1, H, L, D, generator=g)
        values = torch.randn(1, H, L, D, generator=g)
        if tied:
            # the same scores in every head; a few values repeated among the low ones (evicted)
            base = torch.randperm(L, generator=g).float() / L
            low = torch.argsort(base)[: (L - target)]
            for j in range(0, len(low) - 1, 3):
                base[low[j + 1]] = base[low[j]]
            scores = base.view(1, 1, L).expand(1, H, L).contiguous()
        else:
            scores = torch.rand(1, H, L, generator=g)
        mean = scores.mean(dim=1)
        kept = set(mean.topk(target, dim=-1).indices[0].tolist())
        if mode == "exact":
            attn = torch.rand(1, H, L, generator=g) * 0.99 + 0.01
            for i in range(L):
                if i not in kept:
                    for h in range(H):
                        attn[0, h, i] = 0.0 if torch.rand(1, generator=g).item() < 0.5 else 1e6
        else:
            attn = torch.rand(1, H, L, generator=g)
            attn = attn * attn  # spread: some probabilities clamp to 1, most do not
        press = CAMPress(base_press=GivenScores(scores), compression_interval=k, target_size=target, merge_budget=budget)
        module = types.SimpleNamespace(layer_idx=0)
        press.layer_step_counts[0] = k
        press._running_attn_sum[0] = attn.clone()
        recorded = {}
        real_bernoulli = torch.bernoulli
        draw_gen = torch.Generator().manual_seed(seed + 1000)

        def bernoulli(p, *args, **kwargs):
            recorded["prob"] = p.clone()
            m = real_bernoulli(p, generator=draw_gen)
            recorded["mask"] = m.clone()
            return m

        torch.bernoulli = bernoulli
        try:
            out_keys, out_values = press.compress(module, torch.zeros(1, 1, 4), keys.clone(), values.clone(), attn.clone(), {})
        finally:
            torch.bernoulli = real_bernoulli
        if mode == "exact":
            p = recorded["prob"]
            assert bool(((p == 0) | (p == 1)).all()), "exact case with a probability strictly between 0 and 1"
        cases.append({
            "name": f"seed{seed}_H{H}_L{L}_D{D}_target{target}_budget{budget}_k{k}_{mode}{'_tied' if tied else ''}",
            "H": H, "L": L, "D": D, "target_size": target, "merge_budget": budget, "k": k, "mode": mode,
            "keys": flat(keys), "values": flat(values), "scores": flat(scores), "attentions": flat(attn),
            "prob": [[f32(x) for x in row] for row in recorded["prob"][0].tolist()],
            "mask": [[int(x) for x in row] for row in recorded["mask"][0].tolist()],
            "out_keys": flat(out_keys), "out_values": flat(out_values),
            "out_attentions": flat(press._running_attn_sum[0]),
        })
    return cases


def main():
    import kvpress
    os.makedirs(FIX, exist_ok=True)
    meta = {"kvpress": getattr(kvpress, "__version__", "?"), "torch": torch.__version__,
            "script": "tests/reference/merging/make_merge_fixture.py"}
    for name, cases in (("merging.json", merging_cases()), ("cam.json", cam_cases())):
        path = os.path.join(FIX, name)
        with open(path, "w") as f:
            json.dump({"_meta": meta, "cases": cases}, f, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {path}: {len(cases)} cases")


if __name__ == "__main__":
    main()
