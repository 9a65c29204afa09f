#!/usr/bin/env python3
"""The Python package's overhead per decoded token, against the CLI, in one run.

For each context length C (--ctx), the same work three ways, alternating, --repeat rounds:
  cli       build/kvsqueeze bench -m M --ctx C -n N -t T --json   (its decode_ms)
  python    kvsqueeze.Engine: prefill_context(C random ids), then the wall time of
            engine.generate([], max_tokens=N, ignore_eos=True) seen from Python; beside it the
            engine's own decode time in that call (timings.decode_ms): wall / native - 1 is what
            the Python layer adds, native / cli - 1 what differs between the two processes' engines
  streaming the same with an on_text callback (a Python call per piece of text, as streaming does)
The table gives ms per token (median over the rounds) and the overhead vs the CLI (target < 2%), as
the ratio of the medians and as the median of each round's own ratio (the ways of one round run
back to back, so a machine that speeds up or slows down between rounds cancels out of the latter),
and the mean of the rounds' own ratios with its 95% confidence interval (Student t over the rounds):
on a VM whose speed moves by a few percent from run to run, many rounds (--repeat 30) narrow it
enough to tell a 2% overhead from none. Run it on an idle machine.

Usage: bench/bench_python_overhead.py [--model M] [--ctx 512,4096] [--n-gen 128] [--threads 2] [--repeat 3]
                                      [--json OUT.json]
Needs the package installed (pip install .) in the interpreter that runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_speed import DEFAULT_MODEL, REPO, cpu_description, log, portable  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", "-m", default=DEFAULT_MODEL)
    p.add_argument("--kvsqueeze", default=os.path.join(REPO, "build", "kvsqueeze"))
    p.add_argument("--ctx", default="512,4096")
    p.add_argument("--n-gen", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def cli_ms(a, ctx: int) -> float:
    out = subprocess.run([a.kvsqueeze, "bench", "-m", a.model, "--ctx", str(ctx), "-n", str(a.n_gen), "-t", str(a.threads),
                          "--json"], check=True, capture_output=True, text=True).stdout
    data = json.loads(out)
    row = (data["results"] if isinstance(data, dict) else data)[0]
    return row["decode_ms"] / a.n_gen


def python_ms(a, model, ctx: int, streaming: bool) -> tuple[float, float]:
    import kvsqueeze
    engine = kvsqueeze.Engine(model, ctx_size=ctx + a.n_gen, threads=a.threads)
    ids = np.random.default_rng(42).integers(0, model.n_vocab, ctx).tolist()
    engine.prefill_context(ids, a.n_gen)
    pieces = []
    on_text = (lambda piece: pieces.append(piece) or True) if streaming else None
    t0 = time.perf_counter()
    result = engine.generate([], max_tokens=a.n_gen, ignore_eos=True, on_text=on_text)
    wall = (time.perf_counter() - t0) * 1000.0 / a.n_gen
    return wall, result["timings"]["decode_ms"] / a.n_gen


T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 12: 2.18,
        15: 2.13, 20: 2.09, 25: 2.06, 30: 2.04, 40: 2.02, 60: 2.00}  # Student t, 97.5% quantile by degrees of freedom


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and its 95% interval (Student t; the table's next lower degrees of freedom, so a little wide)."""
    n = len(values)
    m = statistics.fmean(values)
    if n < 2:
        return m, float("nan"), float("nan")
    t = T975[max(k for k in T975 if k <= n - 1)]
    half = t * statistics.stdev(values) / n ** 0.5
    return m, m - half, m + half


def main(argv=None) -> int:
    a = parse_args(argv)
    import kvsqueeze
    model = kvsqueeze.Model.load(a.model)
    rows = []
    for ctx in [int(c) for c in a.ctx.split(",")]:
        samples = {"cli": [], "python": [], "python_native": [], "streaming": [], "streaming_native": []}
        for r in range(a.repeat):
            order = ["cli", "python", "streaming"] if r % 2 == 0 else ["streaming", "python", "cli"]
            for way in order:
                if way == "cli":
                    samples["cli"].append(cli_ms(a, ctx))
                else:
                    wall, native = python_ms(a, model, ctx, way == "streaming")
                    samples[way].append(wall)
                    samples[way + "_native"].append(native)
                log(f"ctx {ctx} {way}: {samples[way][-1]:.3f} ms/token")
        med = {k: statistics.median(v) for k, v in samples.items()}
        rows.append({"ctx": ctx, "ms_per_token": med, "samples": samples,
                     "python_overhead": med["python"] / med["cli"] - 1.0, "streaming_overhead": med["streaming"] / med["cli"] - 1.0,
                     "python_paired": statistics.median(p / c - 1.0 for p, c in zip(samples["python"], samples["cli"])),
                     "streaming_paired": statistics.median(p / c - 1.0 for p, c in zip(samples["streaming"], samples["cli"])),
                     "python_paired_mean_ci": mean_ci([p / c - 1.0 for p, c in zip(samples["python"], samples["cli"])]),
                     "streaming_paired_mean_ci": mean_ci([p / c - 1.0 for p, c in zip(samples["streaming"], samples["cli"])]),
                     "python_layer": statistics.median(w / n - 1.0 for w, n in zip(samples["python"], samples["python_native"])),
                     "streaming_layer": statistics.median(w / n - 1.0 for w, n in zip(samples["streaming"], samples["streaming_native"]))})
    report = {"cpu": cpu_description(), "model": portable(a.model), "threads": a.threads, "n_gen": a.n_gen, "rows": rows}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    print(f"{report['cpu']}, {a.threads} threads, {os.path.basename(a.model)}, {a.n_gen} tokens, median of {a.repeat}\n")
    print("| ctx | CLI ms/token | Python ms/token (vs CLI) | per-round ratio | mean [95% CI] | its engine's own | "
          "Python layer | streaming ms/token (vs CLI) | per-round ratio | mean [95% CI] | Python layer |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ci = lambda v: f"{100 * v[0]:+.1f}% [{100 * v[1]:+.1f}, {100 * v[2]:+.1f}]"  # noqa: E731
    for r in rows:
        m = r["ms_per_token"]
        print(f"| {r['ctx']} | {m['cli']:.2f} | {m['python']:.2f} ({100 * r['python_overhead']:+.1f}%) | "
              f"{100 * r['python_paired']:+.1f}% | {ci(r['python_paired_mean_ci'])} | {m['python_native']:.2f} | "
              f"{100 * r['python_layer']:+.2f}% | "
              f"{m['streaming']:.2f} ({100 * r['streaming_overhead']:+.1f}%) | {100 * r['streaming_paired']:+.1f}% | "
              f"{ci(r['streaming_paired_mean_ci'])} | "
              f"{100 * r['streaming_layer']:+.2f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
