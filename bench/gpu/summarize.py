#!/usr/bin/env python3
"""Markdown summary of scripts/gpu/check.sh's results folder: the decode attention kernel's
bandwidth as a fraction of the device's copy bandwidth, and kvsqueeze's prefill/decode speed next
to the PyTorch/transformers + kvpress anchor measured in the same run, as ratios."""
import json
import sys
from pathlib import Path


def read_jsonl(path: Path):
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            rows.append(json.loads(line))
    return rows


def fmt(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"


def main(folder: str) -> None:
    root = Path(folder)
    kernels = read_jsonl(root / "bench_kernels.jsonl")
    ours = read_jsonl(root / "bench_models.jsonl")
    anchor = read_jsonl(root / "anchor.jsonl")

    print("# GPU check summary\n")
    copy = next((k for k in kernels if k.get("bench") == "copy"), None)
    if copy:
        print(f"Device: {copy['device']}; device-to-device copy {copy['gb_s_read_plus_written']:.0f} GB/s (read + written).\n")
        print("## Decode attention (one query, f16 runs, all layers in rotation)\n")
        print("| shape | slots | kept | µs/layer | GB/s | fraction of copy (target >= 0.8) |")
        print("|---|---|---|---|---|---|")
        for k in kernels:
            if k.get("bench") == "decode_attention":
                print(f"| {k['shape']} | {k['slots']} | {k['kept']} | {k['us_per_layer']:.1f} | {k['gb_s']:.0f} | {k['fraction_of_copy']:.2f} |")
        print()
    else:
        print("No kernel benchmark (no device).\n")

    theirs = {(a.get("shape"), a.get("context"), float(a.get("ratio", 0))): a for a in anchor if "error" not in a}
    print("## Engine speed, kvsqueeze vs PyTorch/transformers + kvpress (same run)\n")
    print("| shape | context | ratio | prefill tok/s ours | theirs | ours/theirs | decode tok/s ours | theirs | ours/theirs "
          "| KV bytes ours | theirs | decode time vs ratio 0 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = {}
    for o in ours:
        key = (o["model"], o["context"], float(o["ratio"]))
        if key[2] == 0.0:
            base[key[:2]] = o["decode_tok_s"]
    for o in ours:
        key = (o["model"], o["context"], float(o["ratio"]))
        t = theirs.get(key, {})
        pre_ratio = o["prefill_tok_s"] / t["prefill_tok_s"] if t.get("prefill_tok_s") else None
        dec_ratio = o["decode_tok_s"] / t["decode_tok_s"] if t.get("decode_tok_s") else None
        b = base.get(key[:2])
        rel_time = b / o["decode_tok_s"] if b and o["decode_tok_s"] else None
        print(f"| {key[0]} | {key[1]} | {key[2]} | {fmt(o['prefill_tok_s'])} | {fmt(t.get('prefill_tok_s'))} | {fmt(pre_ratio, 2)} "
              f"| {fmt(o['decode_tok_s'])} | {fmt(t.get('decode_tok_s'))} | {fmt(dec_ratio, 2)} | {o['kv_bytes_held']} "
              f"| {t.get('kv_bytes_held', '-')} | {fmt(rel_time, 2)} |")
    errors = [a for a in anchor if "error" in a]
    for a in errors:
        print(f"\nanchor {a.get('shape')} context {a.get('context')} ratio {a.get('ratio')}: {a['error']}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
