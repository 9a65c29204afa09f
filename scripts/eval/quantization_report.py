#!/usr/bin/env python3
"""docs/QUANTIZATION.md's table and picture from scripts/eval/quantization.sh's results.

Reads OUT/<cache type>/{kld,niah}/results.jsonl and writes OUT/summary.md (mean KL divergence
against the f16 cache, mean NIAH score, KV bytes held relative to the f16 cache, per cache type x
press x ratio, with the Pareto front on KL vs bytes marked) and OUT/kl_vs_bytes.svg (every
combination on one picture, the front joined). Standard library only.
    python3 scripts/eval/quantization_report.py [OUT]     (default: docs/results/quantization)
"""
import json
import math
import os
import sys
from collections import defaultdict


def cells(path):
    """(press label, ratio) -> list of result rows, from one results.jsonl."""
    out = defaultdict(list)
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            out[(r["press"], r["ratio"])].append(r)
    return out


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def collect(root):
    rows = []
    for name in sorted(os.listdir(root)):
        kld = cells(os.path.join(root, name, "kld", "results.jsonl"))
        niah = cells(os.path.join(root, name, "niah", "results.jsonl"))
        for key in sorted(set(kld) | set(niah)):
            k, n = kld.get(key, []), niah.get(key, [])
            held = [r["kv_bytes_held"] for r in k]
            full = [r["kv_bytes_full"] for r in k]  # an uncompressed f16 cache of the same context
            rows.append({
                "type": name, "press": key[0], "ratio": key[1],
                "kl": mean([r["metrics"]["kl"] for r in k]),
                "top1": mean([r["metrics"]["top1"] for r in k]),
                "niah": mean([r["score"] for r in n]),
                "bytes": mean([h / f for h, f in zip(held, full)]) if held else float("nan"),
                "n_kld": len(k), "n_niah": len(n),
            })
    # Means over different windows do not compare: a cell (type, press, ratio) whose KL windows
    # are fewer than the most any cell has (an interrupted type) is left out of the table and the
    # picture until the script has finished it.
    most = max((r["n_kld"] for r in rows), default=0)
    partial = sorted({r["type"] for r in rows if r["n_kld"] < most})
    if partial:
        print(f"left out (KL windows still missing): {', '.join(partial)}", file=sys.stderr)
    return [r for r in rows if r["n_kld"] == most]


def pareto(rows):
    """Rows no other row beats on both bytes and KL."""
    ok = [r for r in rows if not math.isnan(r["kl"]) and not math.isnan(r["bytes"])]
    front = []
    for r in ok:
        if not any(o is not r and o["bytes"] <= r["bytes"] and o["kl"] <= r["kl"] and
                   (o["bytes"] < r["bytes"] or o["kl"] < r["kl"]) for o in ok):
            front.append(r)
    return sorted(front, key=lambda r: r["bytes"])


def write_svg(rows, front, path):
    ok = [r for r in rows if not math.isnan(r["kl"]) and not math.isnan(r["bytes"])]
    if not ok:
        return
    W, H, L, B, T, R = 760, 480, 70, 50, 20, 200
    kmin = min(max(r["kl"], 1e-5) for r in ok) / 2
    kmax = max(max(r["kl"], 1e-5) for r in ok) * 2
    x = lambda b: L + (W - L - R) * b  # bytes held as a fraction of f16, 0..1
    y = lambda k: T + (H - T - B) * (1 - (math.log10(max(k, 1e-5)) - math.log10(kmin)) / (math.log10(kmax) - math.log10(kmin)))
    types = sorted({r["type"] for r in ok})
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    shapes = {"none": "circle", "snapkv": "square", "expected_attention": "diamond"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
           f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">KV bytes held / uncompressed f16 cache</text>',
           f'<text x="16" y="{(T + H - B) / 2}" transform="rotate(-90 16 {(T + H - B) / 2})" text-anchor="middle">'
           'KL divergence vs f16 cache (log)</text>']
    for t in range(0, 11, 2):
        out.append(f'<text x="{x(t / 10)}" y="{H - B + 14}" text-anchor="middle">{t / 10:.1f}</text>')
    for e in range(math.floor(math.log10(kmin)), math.ceil(math.log10(kmax)) + 1):
        if kmin <= 10 ** e <= kmax:
            out.append(f'<text x="{L - 6}" y="{y(10 ** e) + 4}" text-anchor="end">1e{e}</text>')
            out.append(f'<line x1="{L}" y1="{y(10 ** e)}" x2="{W - R}" y2="{y(10 ** e)}" stroke="#ddd"/>')
    pts = " ".join(f"{x(r['bytes']):.1f},{y(r['kl']):.1f}" for r in front)
    out.append(f'<polyline points="{pts}" fill="none" stroke="black" stroke-dasharray="4 3"/>')
    for r in ok:
        c = colours[types.index(r["type"]) % len(colours)]
        px, py = x(r["bytes"]), y(r["kl"])
        shape = shapes.get(r["press"].split("(")[0], "triangle")
        if shape == "circle":
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{c}"/>')
        elif shape == "square":
            out.append(f'<rect x="{px - 4:.1f}" y="{py - 4:.1f}" width="8" height="8" fill="{c}"/>')
        elif shape == "diamond":
            out.append(f'<polygon points="{px},{py - 5} {px + 5},{py} {px},{py + 5} {px - 5},{py}" fill="{c}"/>')
        else:
            out.append(f'<polygon points="{px},{py - 5} {px + 5},{py + 4} {px - 5},{py + 4}" fill="{c}"/>')
    for i, t in enumerate(types):
        out.append(f'<rect x="{W - R + 15}" y="{T + 16 * i}" width="10" height="10" fill="{colours[i % len(colours)]}"/>')
        out.append(f'<text x="{W - R + 30}" y="{T + 16 * i + 9}">{t}</text>')
    base = T + 16 * len(types) + 10
    for i, (p, s) in enumerate([("no eviction", "circle"), ("snapkv", "square"), ("expected_attention", "diamond"),
                                ("adakv(expected_attention)", "triangle")]):
        out.append(f'<text x="{W - R + 15}" y="{base + 16 * i + 9}">{ {"circle": "●", "square": "■", "diamond": "◆", "triangle": "▲"}[s]} {p}</text>')
    out.append(f'<text x="{W - R + 15}" y="{base + 16 * 4 + 9}">- - Pareto front</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "docs/results/quantization"
    rows = collect(root)
    front = pareto(rows)
    lines = ["| cache type | press | ratio | bytes held / f16 | KL vs f16 | top-1 agree | NIAH | Pareto |",
             "|---|---|---:|---:|---:|---:|---:|:---:|"]
    for r in sorted(rows, key=lambda r: (r["bytes"], r["kl"])):
        lines.append(f"| {r['type']} | {r['press']} | {r['ratio']:g} | {r['bytes']:.3f} | {r['kl']:.5f} | {r['top1']:.3f} | "
                     f"{r['niah']:.3f} | {'★' if r in front else ''} |")
    with open(os.path.join(root, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    write_svg(rows, front, os.path.join(root, "kl_vs_bytes.svg"))
    print(f"{len(rows)} combinations, {len(front)} on the Pareto front: {root}/summary.md, {root}/kl_vs_bytes.svg")


if __name__ == "__main__":
    main()
