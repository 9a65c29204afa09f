#!/usr/bin/env python3
"""RULER ranking table for docs/RESULTS.md, from a `kvsqueeze eval ruler` results.jsonl.

Per press and ratio: the mean over tasks of each task's mean score x100, its 95% interval (1.96
standard errors of that mean, from each task's standard error over its samples: the tasks are
fixed, the samples drawn; as `kvsqueeze eval`'s summary.md computes it), the means of the task families (single needle, multi-key,
multi-value/query, variable tracking, common/frequent words, QA), and the kvpress leaderboard's
RULER-4K figure for the same press and ratio where it publishes one (ALGORITHMS.md 8.5 (a),
Llama-3.1-8B-Instruct). Only presses that have every task are ranked; the others are listed
with how many tasks they have.

  scripts/eval/ruler_table.py [docs/results/ruler/results.jsonl]             every press at 0.5, ranked
  scripts/eval/ruler_table.py --by-ratio                                     presses run at 0.25/0.5/0.75
Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict

FAMILIES = {
    "single": ("niah_single_1", "niah_single_2", "niah_single_3"),
    "multikey": ("niah_multikey_1", "niah_multikey_2", "niah_multikey_3"),
    "multi v/q": ("niah_multivalue", "niah_multiquery"),
    "vt": ("vt",),
    "cwe/fwe": ("cwe", "fwe"),
    "qa": ("qa_1", "qa_2"),
}
# kvpress leaderboard, RULER-4K average (ALGORITHMS.md 8.5 (a)), by our press name and ratio.
LEADERBOARD = {
    ("none", 0.0): 95.4,
    ("adakv(expected_attention)", 0.25): 93.6, ("adakv(expected_attention)", 0.5): 91.5,
    ("adakv(expected_attention)", 0.75): 74.2,
    ("duo_attention", 0.25): 95.3, ("duo_attention", 0.5): 95.0, ("duo_attention", 0.75): 71.3,
    ("keydiff", 0.25): 91.0, ("keydiff", 0.5): 84.7, ("keydiff", 0.75): 74.2,
    ("expected_attention", 0.25): 87.6, ("expected_attention", 0.5): 74.7, ("expected_attention", 0.75): 52.7,
    ("tova", 0.25): 86.5, ("tova", 0.5): 75.6, ("tova", 0.75): 64.2,
    ("snapkv", 0.25): 80.3, ("snapkv", 0.5): 67.0, ("snapkv", 0.75): 39.9,
    ("streaming_llm", 0.25): 78.3, ("streaming_llm", 0.5): 60.0, ("streaming_llm", 0.75): 40.6,
    ("knorm", 0.25): 74.5, ("knorm", 0.5): 49.7, ("knorm", 0.75): 29.0,
    ("observed_attention", 0.25): 72.9, ("observed_attention", 0.5): 50.8, ("observed_attention", 0.75): 28.9,
    ("random", 0.25): 63.1, ("random", 0.5): 7.6, ("random", 0.75): 0.5,
    ("kvzip", 0.5): 95.0, ("kvzip", 0.75): 95.0,
    ("chunkkv(snapkv)", 0.25): 84.7, ("chunkkv(snapkv)", 0.5): 72.8, ("chunkkv(snapkv)", 0.75): 56.6,
}
def label(press: str) -> str:  # the head profile's path shortened as in RESULTS.md
    return press.replace("head_scores=docs/results/head_budgets/qwen05.heads.json", "heads=qwen05")


def load(path: str):
    cells = defaultdict(lambda: defaultdict(list))  # (press, ratio) -> task -> scores
    for line in open(path, encoding="utf-8"):
        if not line.strip():
            continue
        r = json.loads(line)
        task = r["task"].split("/", 1)[-1]
        cells[(label(r["press"]), float(r["ratio"]))][task].append(100.0 * float(r["score"]))
    return cells


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", nargs="?", default="docs/results/ruler/results.jsonl")
    p.add_argument("--by-ratio", action="store_true", help="one row per press run at several ratios")
    a = p.parse_args()
    cells = load(a.results)
    tasks = sorted({t for by_task in cells.values() for t in by_task})
    full = len(tasks)
    rows, partial = [], []
    for (press, ratio), by_task in cells.items():
        if len(by_task) < full:
            partial.append((press, ratio, len(by_task)))
            continue
        task_means = [statistics.fmean(by_task[t]) for t in tasks]
        se2 = [statistics.variance(by_task[t]) / len(by_task[t]) if len(by_task[t]) > 1 else float("nan") for t in tasks]
        mean = statistics.fmean(task_means)
        ci = 1.96 * math.sqrt(sum(se2)) / len(tasks)
        n = sum(len(by_task[t]) for t in tasks)
        fam = {}
        for name, members in FAMILIES.items():
            xs = [s for t in members for s in by_task.get(t, [])]
            fam[name] = statistics.fmean(xs) if xs else float("nan")
        rows.append((press, ratio, mean, ci, n, fam,
                     LEADERBOARD.get((press, ratio))))
    if a.by_ratio:
        return by_ratio(rows)
    rows = [r for r in rows if r[1] in (0.0, 0.5)]
    print(f"RULER at 4096 tokens, {full} tasks; score x100, mean of the task means; "
          "±95%: 1.96 standard errors of it (from each task's samples).\n")
    head = "| rank | press | ratio | score | ±95% | n | " + " | ".join(FAMILIES) + " | kvpress leaderboard |"
    print(head)
    print("|" + "---:|" * 3 + "---:|" * 3 + "---:|" * len(FAMILIES) + "---:|")
    rows.sort(key=lambda r: (-r[2], r[1], r[0]))
    for i, (press, ratio, mean, ci, n, fam, lb) in enumerate(rows, 1):
        fams = " | ".join(f"{fam[k]:.1f}" for k in FAMILIES)
        print(f"| {i} | {press} | {ratio:g} | {mean:.1f} | {ci:.1f} | {n} | {fams} | {'' if lb is None else f'{lb:.1f}'} |")
    if partial:
        print("\nNot ranked (tasks missing): " + ", ".join(f"{p}@{r:g} ({k} of {full})" for p, r, k in sorted(partial)))


def by_ratio(rows) -> None:
    table = defaultdict(dict)
    for press, ratio, mean, ci, _n, _fam, lb in rows:
        table[press][ratio] = (mean, ci, lb)
    ratios = (0.25, 0.5, 0.75)
    print("| press | " + " | ".join(f"{r:g}" for r in ratios) + " | kvpress leaderboard " + " / ".join(f"{r:g}" for r in ratios) + " |")
    print("|---|" + "---:|" * (len(ratios) + 1))
    multi = [p for p in table if sum(r in table[p] for r in ratios) > 1]
    for press in sorted(multi, key=lambda p: -table[p].get(0.5, (0,))[0]):
        cols = " | ".join(f"{table[press][r][0]:.1f} ± {table[press][r][1]:.1f}" if r in table[press] else "–" for r in ratios)
        lbs = " / ".join(f"{LEADERBOARD[(press, r)]:.1f}" if (press, r) in LEADERBOARD else "–" for r in ratios)
        print(f"| {press} | {cols} | {lbs} |")


if __name__ == "__main__":
    main()
