#!/usr/bin/env python3
"""NIAH results per press and ratio, by haystack length: the mean score (x100) over the depths of
each length and over all cells, with the 95% interval of the overall mean (Student's t over cells).
Reads an eval results.jsonl (default docs/results/niah/results.jsonl), prints a markdown table
sorted by the overall mean at each ratio. Used for docs/RESULTS.md.
With --found TEXT, a last column gives the share of cells whose answer contains TEXT (case-insensitive),
a cruder but easier reading than ROUGE-L (the kvpress-style needle: --found "dolores park").
  scripts/eval/niah_by_length.py [results.jsonl] [--ratios 0.5,0.25,0.75] [--found TEXT]"""
import argparse
import collections
import json
import math
import statistics

T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 15: 2.13, 19: 2.09, 20: 2.09, 30: 2.04}


def t95(df):
    return T95.get(df) or T95[min(T95, key=lambda k: abs(k - df))]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", nargs="?", default="docs/results/niah/results.jsonl")
    p.add_argument("--ratios", default="0.5,0.25,0.75")
    p.add_argument("--found", default=None)
    a = p.parse_args()
    cells = collections.defaultdict(dict)  # (press, ratio) -> {(length, depth): score}
    found = collections.defaultdict(dict)  # (press, ratio) -> {(length, depth): answer contains --found}
    for line in open(a.results):
        r = json.loads(line)
        key = ("none", 0.0) if r["press"] == "none" else (r["press"], float(r["ratio"]))
        cells[key][(r["meta"]["length"], r["meta"]["depth"])] = 100.0 * r["score"]
        if a.found:
            found[key][(r["meta"]["length"], r["meta"]["depth"])] = a.found.lower() in r["prediction"].lower()
    lengths = sorted({length for c in cells.values() for length, _ in c})
    head = "| press | ratio | " + " | ".join(f"{n // 1024}K" for n in lengths) + " | all | ±95% | n |" + (" found (%) |" if a.found else "")
    print(head)
    print("|" + "---|" * 2 + "---:|" * (len(lengths) + 3 + (1 if a.found else 0)))

    def row(press, ratio):
        c = cells[(press, ratio)]
        by_len = [statistics.mean([s for (n, _), s in c.items() if n == length]) if any(n == length for n, _ in c) else float("nan")
                  for length in lengths]
        vals = list(c.values())
        ci = t95(len(vals) - 1) * statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else float("nan")
        return ("| " + press.replace("head_scores=docs/results/head_budgets/qwen05.heads.json", "heads=qwen05") + f" | {ratio:g} | " +
                " | ".join(f"{x:.1f}" for x in by_len) + f" | {statistics.mean(vals):.1f} | {ci:.1f} | {len(vals)} |" +
                (f" {100.0 * sum(found[(press, ratio)].values()) / len(vals):.0f} |" if a.found else ""))

    print(row("none", 0.0))
    for ratio in [float(x) for x in a.ratios.split(",")]:
        presses = [k[0] for k in cells if k[1] == ratio and k[0] != "none"]
        for press in sorted(presses, key=lambda pr: -statistics.mean(cells[(pr, ratio)].values())):
            print(row(press, ratio))


if __name__ == "__main__":
    main()
