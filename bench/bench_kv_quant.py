#!/usr/bin/env python3
"""Quantized KV cache side by side with llama.cpp, on the same GGUF, in one run.

KL divergence (each engine against its own f16 cache, the same tokens):
  llama.cpp:  llama-perplexity -m M -f TEXT -c 2N --chunks C -fa on -ctk f16 -ctv f16 --kl-divergence-base B
              llama-perplexity -m M -f TEXT -c 2N --chunks C -fa on -ctk T -ctv T --kl-divergence-base B --kl-divergence
              (each chunk of 2N tokens evaluated from scratch, the last N - 1 predictions scored;
              llama.cpp rotates quantized K/V rows by default, PR #21038)
  kvsqueeze:  kvsqueeze eval kld -m M -f TEXT --windows consecutive --lengths N --continuation N --samples C
                  --press none --reference-kv-type f16 --kv-type T
              (the same chunks of 2N tokens: N of context, N teacher-forced and scored)
Decode speed at each depth D (ms per token after a D-token context):
  llama.cpp:  llama-bench -m M -t THREADS -r 1 -o json -fa 1 -ctk T -ctv T -p 0 -n G -d D
  kvsqueeze:  kvsqueeze bench -m M -t THREADS --ctx D -n G --kv-type T --ratio 0[,0.75] --press knorm --json
              (q4_0 also with 75% of the cache evicted: the decode cost depends on the slots
              kept, not on which press chose them, and knorm needs no attention statistics)
The report gives each engine's times as ratios of its own f16 time and checks the targets of
docs/QUANTIZATION.md: kvsqueeze q8_0 at most 0.65x its f16 decode time at the deepest depth,
q4_0 with 75% evicted at most 0.35x.

Usage:
  bench/bench_kv_quant.py [--model M.gguf] [--llamacpp-bin DIR] [--kvsqueeze build/kvsqueeze]
                          [--types f16,q8_0,q4_0] [--extra-types kivi2] [--depths 4096,16384,32000]
                          [--llamacpp-depths D,...] [--n-gen 16] [--threads 2] [--kl-context 512]
                          [--kl-chunks 4] [--text data/haystack.txt] [--skip-kl] [--skip-speed]
                          [--kvsqueeze-kl-dir DIR] [--json OUT.json] [--markdown OUT.md]
--json is rewritten after every measurement, so an interrupted run keeps what it measured.
--kvsqueeze-kl-dir reads kvsqueeze's KL from DIR/kvsq-<type>/results.jsonl (a previous run's
work folder, same binary) instead of measuring it again. llama.cpp's prefill of a deep context
is slow on 2 cores (about 4 minutes per type at 16K); --llamacpp-depths can leave it the
shallower depths.
Python 3 standard library only (and bench/bench_speed.py's helpers). Exit status: 0 ok,
1 a measurement failed, 2 bad usage / missing binary or model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_speed import (DEFAULT_LLAMACPP_BIN, DEFAULT_MODEL, REPO, BenchError, cpu_description,  # noqa: E402
                         llamacpp_version, log, run_measured, wait_idle)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", "-m", default=DEFAULT_MODEL)
    p.add_argument("--llamacpp-bin", default=DEFAULT_LLAMACPP_BIN)
    p.add_argument("--kvsqueeze", default=os.path.join(REPO, "build", "kvsqueeze"))
    p.add_argument("--types", default="f16,q8_0,q4_0", help="cache types both engines run (f16 first)")
    p.add_argument("--extra-types", default="kivi2", help="types only kvsqueeze has ('' for none)")
    p.add_argument("--depths", default="4096,16384,32000")
    p.add_argument("--llamacpp-depths", default=None, help="depths llama.cpp runs (default: --depths)")
    p.add_argument("--kvsqueeze-kl-dir", default=None)
    p.add_argument("--n-gen", type=int, default=16)
    p.add_argument("--threads", "-t", type=int, default=2)
    p.add_argument("--kl-context", type=int, default=512, help="N: chunks of 2N tokens, N scored")
    p.add_argument("--kl-chunks", type=int, default=4)
    p.add_argument("--text", default=os.path.join(REPO, "data", "haystack.txt"))
    p.add_argument("--skip-kl", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--wait-idle", type=float, default=60.0)
    p.add_argument("--max-foreign-load", type=float, default=0.25)
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--json", metavar="OUT")
    p.add_argument("--markdown", metavar="OUT")
    a = p.parse_args(argv)
    a.types = [t for t in a.types.split(",") if t]
    a.extra_types = [t for t in a.extra_types.split(",") if t]
    a.depths = [int(d) for d in a.depths.split(",") if d]
    a.llamacpp_depths = a.depths if a.llamacpp_depths is None else [int(d) for d in a.llamacpp_depths.split(",") if d]
    if not a.types or a.types[0] != "f16":
        raise SystemExit("bench_kv_quant.py: error: --types must start with f16 (the reference)")
    for path, what in ((a.model, "model"), (a.text, "text")):
        if not os.path.isfile(path):
            raise SystemExit(f"bench_kv_quant.py: error: {what} not found: {path}")
    for exe in (a.kvsqueeze, os.path.join(a.llamacpp_bin, "llama-bench"), os.path.join(a.llamacpp_bin, "llama-perplexity")):
        if not os.access(exe, os.X_OK):
            raise SystemExit(f"bench_kv_quant.py: error: not executable: {exe} (bench/build_llamacpp.sh builds llama.cpp)")
    return a


def run(cmd: list[str], a, label: str) -> tuple[str, dict]:
    load = wait_idle(a.wait_idle, a.max_foreign_load)
    log(f"{label}: {' '.join(cmd)}")
    proc, info = run_measured(cmd, a.timeout)
    info["foreign_cores_before"] = load
    if proc.returncode != 0:
        raise BenchError(f"{label} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc.stdout + proc.stderr, info


# ---------------------------------------------------------------------------------------------
# KL divergence
# ---------------------------------------------------------------------------------------------
def llamacpp_kl(a, work: str) -> dict:
    ppl = os.path.join(a.llamacpp_bin, "llama-perplexity")
    base = os.path.join(work, "f16.kld")
    common = [ppl, "-m", a.model, "-f", a.text, "-c", str(2 * a.kl_context), "--chunks", str(a.kl_chunks), "-t", str(a.threads),
              "-fa", "on", "-b", str(2 * a.kl_context)]
    run(common + ["-ctk", "f16", "-ctv", "f16", "--kl-divergence-base", base], a, "llama.cpp f16 logits")
    out = {}
    for t in a.types[1:]:
        text, _ = run(common + ["-ctk", t, "-ctv", t, "--kl-divergence-base", base, "--kl-divergence"], a, f"llama.cpp KL {t}")
        m = re.search(r"Mean\s+KLD:\s+([-0-9.eE+]+)", text)
        top = re.search(r"Same top p:\s+([0-9.]+)", text)
        if not m:
            raise BenchError(f"no 'Mean KLD' in llama-perplexity's output for {t}")
        out[t] = {"kl": float(m.group(1)), "top1": float(top.group(1)) / 100 if top else None}
    return out


def kvsqueeze_kl(a, work: str) -> dict:
    out = {}
    for t in a.types[1:] + a.extra_types:
        folder = os.path.join(a.kvsqueeze_kl_dir or work, "kvsq-" + t)
        if not a.kvsqueeze_kl_dir:
            run([a.kvsqueeze, "eval", "kld", "-m", a.model, "-f", a.text, "--windows", "consecutive", "--lengths", str(a.kl_context),
             "--continuation", str(a.kl_context), "--samples", str(a.kl_chunks), "--press", "none", "--reference-kv-type", "f16",
                 "--kv-type", t, "-t", str(a.threads), "-o", folder, "--no-report"], a, f"kvsqueeze KL {t}")
        with open(os.path.join(folder, "results.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        rows = [r for r in rows if r.get("press") in ("none", None)]
        if not rows:
            raise BenchError(f"kvsqueeze eval kld wrote no results for {t}")
        # Every window scores the same number of tokens: the mean of the means is the token mean.
        out[t] = {"kl": sum(r["metrics"]["kl"] for r in rows) / len(rows),
                  "top1": sum(r["metrics"]["top1"] for r in rows) / len(rows),
                  "held_vs_f16": rows[0]["kv_bytes_held"] / rows[0]["kv_bytes_full"]}
    return out


# ---------------------------------------------------------------------------------------------
# decode speed
# ---------------------------------------------------------------------------------------------
def llamacpp_decode(a, t: str, depth: int) -> dict:
    text, info = run([os.path.join(a.llamacpp_bin, "llama-bench"), "-m", a.model, "-t", str(a.threads), "-r", "1", "-o", "json",
                      "-fa", "1", "-ctk", t, "-ctv", t, "-p", "0", "-n", str(a.n_gen), "-d", str(depth)], a,
                     f"llama.cpp decode {t} d{depth}")
    rows = json.loads(text[text.index("["):text.rindex("]") + 1])
    ts = rows[0]["avg_ts"]
    return {"ms_per_token": 1000.0 / ts, "foreign_cores": info.get("foreign_cores")}


def kvsqueeze_decode(a, t: str, depth: int, ratios: list[float], cache_dir: str) -> dict:
    text, info = run([a.kvsqueeze, "bench", "-m", a.model, "-t", str(a.threads), "--ctx", str(depth), "-n", str(a.n_gen),
                      "--kv-type", t, "--ratio", ",".join(str(r) for r in ratios), "--press", "knorm", "--json",
                      "--cache-dir", cache_dir], a, f"kvsqueeze decode {t} d{depth}")
    report = json.loads(text[text.index("{"):text.rindex("}") + 1])
    return {f"{r['ratio']:g}": {"ms_per_token": r["decode_ms_per_token"], "held_vs_f16": r["held_vs_full"],
                                "foreign_cores": info.get("foreign_cores")} for r in report["results"]}


def fmt(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(rep: dict) -> str:
    lines = [f"Machine: {rep['machine']}; threads {rep['threads']}; llama.cpp {rep['llamacpp']}", ""]
    if rep.get("kl"):
        n = rep["kl_context"]
        lines += [f"KL divergence against each engine's own f16 cache: {rep['kl_chunks']} consecutive chunks of {2 * n} "
                  f"tokens of `{rep['text']}`, the last {n} of each scored (llama.cpp scores {n - 1}).", "",
                  "| type | llama.cpp KL | kvsqueeze KL | llama.cpp top-1 | kvsqueeze top-1 | kvsqueeze held / f16 |",
                  "|---|---:|---:|---:|---:|---:|"]
        ours, theirs = rep["kl"]["kvsqueeze"], rep["kl"].get("llama.cpp", {})
        for t, r in ours.items():
            l = theirs.get(t, {})
            lines.append(f"| {t} | {fmt(l.get('kl'), 5)} | {fmt(r['kl'], 5)} | {fmt(l.get('top1'), 3)} | {fmt(r['top1'], 3)} | "
                         f"{fmt(r['held_vs_f16'], 3)} |")
        lines.append("")
    if rep.get("decode"):
        lines += [f"Decode, ms per token after a context of the given depth ({rep['n_gen']} tokens), and as a ratio of the "
                  "same engine's f16 time:", "",
                  "| depth | type | evicted | llama.cpp ms | kvsqueeze ms | llama.cpp / its f16 | kvsqueeze / its f16 | kvsqueeze held / f16 |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|"]
        for d, per in rep["decode"].items():
            f16_l = per["llama.cpp"].get("f16", {}).get("ms_per_token")  # absent at depths llama.cpp skipped
            f16_k = per["kvsqueeze"]["f16"]["0"]["ms_per_token"]
            for t, rs in per["kvsqueeze"].items():
                for ratio, r in rs.items():
                    l = per["llama.cpp"].get(t, {}) if ratio == "0" else {}
                    lms = l.get("ms_per_token")
                    lines.append(f"| {d} | {t} | {float(ratio):.0%} | {fmt(lms)} | {fmt(r['ms_per_token'])} | "
                                 f"{fmt(lms / f16_l if lms and f16_l else None)} | {fmt(r['ms_per_token'] / f16_k)} | "
                                 f"{fmt(r['held_vs_f16'], 3)} |")
        lines.append("")
    for line in rep.get("targets", []):
        lines.append(f"- {line}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    a = parse_args(argv)
    rep = {"machine": cpu_description(), "threads": a.threads, "llamacpp": llamacpp_version(a.llamacpp_bin),
           "model": os.path.basename(a.model), "text": os.path.relpath(a.text, REPO), "kl_context": a.kl_context,
           "kl_chunks": a.kl_chunks, "n_gen": a.n_gen}
    work = tempfile.mkdtemp(prefix="kvsq-quant-bench-")

    def save():
        if a.json:
            with open(a.json, "w") as f:
                json.dump(rep, f, indent=1)

    try:
        if not a.skip_kl:
            rep["kl"] = {"llama.cpp": llamacpp_kl(a, work)}
            save()
            rep["kl"]["kvsqueeze"] = kvsqueeze_kl(a, work)
            save()
        if not a.skip_speed:
            rep["decode"] = {}
            for d in a.depths:
                per = {"llama.cpp": {}, "kvsqueeze": {}}
                rep["decode"][str(d)] = per
                if d in a.llamacpp_depths:
                    for t in a.types:
                        per["llama.cpp"][t] = llamacpp_decode(a, t, d)
                        save()
                for t in a.types + a.extra_types:
                    per["kvsqueeze"][t] = kvsqueeze_decode(a, t, d, [0.0, 0.75] if t == "q4_0" else [0.0], os.path.join(work, "caches"))
                    shutil.rmtree(os.path.join(work, "caches"), ignore_errors=True)  # a 32K cache file is large
                    save()
            deepest = rep["decode"][str(a.depths[-1])]["kvsqueeze"]
            f16 = deepest["f16"]["0"]["ms_per_token"]
            rep["targets"] = []
            if "q8_0" in deepest:
                r = deepest["q8_0"]["0"]["ms_per_token"] / f16
                rep["targets"].append(f"q8_0 at depth {a.depths[-1]}: {r:.2f}x the f16 decode time (target <= 0.65): "
                                      f"{'met' if r <= 0.65 else 'NOT met'}")
            if "q4_0" in deepest:
                r = deepest["q4_0"]["0.75"]["ms_per_token"] / f16
                rep["targets"].append(f"q4_0 with 75% evicted at depth {a.depths[-1]}: {r:.2f}x the f16 decode time "
                                      f"(target <= 0.35): {'met' if r <= 0.35 else 'NOT met'}")
    except BenchError as e:
        print(f"bench_kv_quant.py: error: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    md = markdown(rep)
    print(md)
    save()
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
