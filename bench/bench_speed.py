#!/usr/bin/env python3
"""Side-by-side CPU speed benchmark: kvsqueeze vs llama.cpp (llama-bench).

For every model it measures, with the same thread count (default 2):
  pp512, pp4096      prefill throughput (tok/s) of a 512 / 4096-token prompt
  tg128 @ d512/d4096 decode throughput (tok/s) of 128 tokens generated right
                     after a 512 / 4096-token context was prefilled
For every context length C in --ctx (default 512,4096) and every round:
  llama.cpp:  llama-bench -m M -t 2 -r 1 -o json -p C -n 0          (prefill)
              llama-bench -m M -t 2 -r 1 -o json -p 0 -n 128 -d C   (decode at depth C)
              (llama-bench defaults otherwise: -b 2048 -ub 512, f16 KV cache, -fa auto,
              one warmup run per test; -d prefills the C-token context untimed first)
  kvsqueeze:  build/kvsqueeze bench -m M --ctx C -n 128 --threads 2 --json
              (prefill of C random tokens, then 128 greedy decode steps on that context)
The two tools alternate (the order flips every round), --repeat rounds (default 3); the
table reports the median over the rounds. One context per invocation keeps every
measurement short, which matters on a shared machine (see below).

Usage:
  bench/bench_speed.py [--model M.gguf ...] [--no-default-model] [--with-synth]
                               [--repeat 3] [--threads 2] [--ctx 512,4096] [--n-gen 128]
                               [--kvsqueeze build/kvsqueeze] [--llamacpp-bin DIR]
                               [--baseline OLD/kvsqueeze]
                               [--skip-kvsqueeze | --skip-llamacpp]
                               [--wait-idle 60] [--max-foreign-load 0.25] [--retry-contended 2]
                               [--bandwidth] [--json OUT.json] [--markdown OUT.md]

The machine is shared: before every measurement the script waits (up to --wait-idle
seconds) until the CPU time used by other processes drops below --max-foreign-load
cores; it records the foreign load seen *during* each measurement (from /proc/stat minus
the child's own CPU time) and re-measures a contended one up to --retry-contended times
(keeping the least contended). Medians that still include a contended sample are
flagged with '*'.

--bandwidth adds the decode report: kvsqueeze measures the machine's read bandwidth in each of its
runs (`kvsqueeze bench --bandwidth`) and the bytes a decoded token reads at each depth (every weight
once, the LM head included, one embedding row, plus the f16 K/V in use); bound = bandwidth / bytes,
and both engines' decode speeds are given as a share of it. llama.cpp reads the same GGUF and, at
the same depth, the same f16 K/V (for Gemma 3 it too keeps only the window of sliding layers), so
the same bound applies to it.

--baseline OLD/kvsqueeze puts an earlier kvsqueeze build in llama.cpp's place (same commands
as kvsqueeze, alternating the same way): a before/after comparison in one run, the ratio
being new/old.

Python 3 standard library only. Exit status: 0 ok, 1 a benchmark failed, 2 bad usage /
missing binary or model (one-line error on stderr).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, ".."))
CACHE = os.environ.get("KVSQ_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kvsqueeze")
DEFAULT_MODEL = os.path.join(CACHE, "models", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
DEFAULT_LLAMACPP_BIN = os.environ.get("LLAMACPP_BIN") or os.path.join(CACHE, "llama.cpp", "build", "bin")
SYNTH_SCRIPT = os.path.join(REPO, "scripts", "synth", "make_synthetic_gguf.py")
SYNTH_PYTHON = os.environ.get("KVSQ_PYTHON") or os.path.join(CACHE, "venv", "bin", "python")  # scripts/setup.sh makes it (gguf, numpy)
SYNTH_MODEL = os.path.join(CACHE, "models", "synth-qwen2.5-0.5b-mixed.gguf")
SYNTH_ARGS = ["--arch", "qwen2", "--shape", "qwen2.5-0.5b", "--type", "mixed", "--seed", "0"]

PROG = "bench_speed.py"


class UsageError(Exception):
    pass


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# machine load
# --------------------------------------------------------------------------------------------
def _cpu_busy_seconds() -> float | None:
    """Busy CPU seconds of the whole machine since boot (all CPUs), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()
    except OSError:
        return None
    vals = [int(x) for x in parts[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice
    busy = vals[0] + vals[1] + vals[2] + vals[5] + vals[6] + (vals[7] if len(vals) > 7 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def foreign_load(seconds: float = 1.0) -> float | None:
    """Average number of cores used by everything else over `seconds`."""
    b0 = _cpu_busy_seconds()
    if b0 is None:
        return None
    s0 = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(seconds)
    b1 = _cpu_busy_seconds()
    s1 = resource.getrusage(resource.RUSAGE_SELF)
    own = (s1.ru_utime + s1.ru_stime) - (s0.ru_utime + s0.ru_stime)
    return max(0.0, (b1 - b0 - own) / seconds)


def wait_idle(max_wait: float, threshold: float) -> float | None:
    """Wait until the foreign load is below threshold (or max_wait passed); return last load."""
    deadline = time.monotonic() + max_wait
    warned = False
    while True:
        load = foreign_load(1.0)
        if load is None or load < threshold or time.monotonic() >= deadline:
            if load is not None and load >= threshold and max_wait > 0:
                log(f"machine still busy ({load:.2f} foreign cores) after waiting {max_wait:.0f}s; measuring anyway")
            return load
        if not warned:
            log(f"waiting for the machine to go idle (other processes use {load:.2f} cores)")
            warned = True


def run_measured(cmd: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    """Run cmd; return the process and {'wall_s', 'cpu_s', 'foreign_cores'}."""
    b0 = _cpu_busy_seconds()
    c0 = _children_cpu_seconds()
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout:.0f}s: {shlex.join(cmd)}")
    except OSError as e:
        raise BenchError(f"cannot run {cmd[0]}: {e.strerror}")
    wall = time.monotonic() - t0
    cpu = _children_cpu_seconds() - c0
    b1 = _cpu_busy_seconds()
    info = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}
    if b0 is not None and wall > 0:
        info["foreign_cores"] = round(max(0.0, (b1 - b0 - cpu) / wall), 3)
    return proc, info


def last_line(text: str) -> str:
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return lines[-1] if lines else "(no output)"


# --------------------------------------------------------------------------------------------
# the two engines
# --------------------------------------------------------------------------------------------
def test_names(ctxs: list[int], n_gen: int) -> list[str]:
    return [f"pp{c}" for c in ctxs] + [f"tg{n_gen} @ d{c}" for c in ctxs]


def llamacpp_unit_cmds(bench: str, model: str, a, ctx: int) -> list[list[str]]:
    """The llama-bench invocations for one context length: prefill, then decode at that depth."""
    base = [bench, "-m", model, "-t", str(a.threads), "-r", "1", "-o", "json"]
    extra = ["--no-warmup"] if a.llamacpp_no_warmup else []
    return [base + ["-p", str(ctx), "-n", "0"] + extra,
            base + ["-p", "0", "-n", str(a.n_gen), "-d", str(ctx)] + extra]


def run_llamacpp(cmd: list[str], a) -> tuple[dict, dict, list[dict]]:
    """One llama-bench invocation; returns ({test: tok/s}, load info, raw records)."""
    out: dict[str, float] = {}
    raw: list[dict] = []
    proc, info = run_measured(cmd, a.timeout)
    if proc.returncode != 0:
        raise BenchError(f"llama-bench failed (exit {proc.returncode}): {last_line(proc.stderr)}")
    try:
        records = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"llama-bench printed no valid JSON: {last_line(proc.stdout + proc.stderr)}")
    for r in records:
        if r.get("n_prompt", 0) > 0 and r.get("n_gen", 0) == 0:
            name = f"pp{r['n_prompt']}" + (f" @ d{r['n_depth']}" if r.get("n_depth") else "")
        elif r.get("n_gen", 0) > 0 and r.get("n_prompt", 0) == 0:
            name = f"tg{r['n_gen']} @ d{r.get('n_depth', 0)}"
        else:
            continue
        out[name] = float(r["avg_ts"])
        raw.append({k: r.get(k) for k in ("build_commit", "build_number", "cpu_info", "backends", "model_type",
                                           "n_batch", "n_ubatch", "n_threads", "type_k", "type_v", "flash_attn",
                                           "n_prompt", "n_gen", "n_depth", "avg_ns", "avg_ts")})
    return out, info, raw


def kvsqueeze_cmd(binary: str, model: str, a, ctxs: list[int], bandwidth: bool = False) -> list[str]:
    return [binary, "bench", "-m", model, "--ctx", ",".join(str(c) for c in ctxs), "-n", str(a.n_gen),
            "--threads", str(a.threads), "--json"] + (["--bandwidth"] if bandwidth else [])


def run_kvsqueeze(cmd: list[str], a) -> tuple[dict, dict, dict]:
    proc, info = run_measured(cmd, a.timeout)
    if proc.returncode != 0:
        raise BenchError(f"kvsqueeze bench failed (exit {proc.returncode}): {last_line(proc.stderr or proc.stdout)}")
    obj = None
    for line in reversed(proc.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
                break
            except json.JSONDecodeError:
                pass
    if obj is None:
        try:
            obj = json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise BenchError(f"kvsqueeze bench printed no JSON object: {last_line(proc.stdout + proc.stderr)}")
    out: dict[str, float] = {}
    try:
        for r in obj["results"]:
            c = int(r["ctx"])
            out[f"pp{c}"] = float(r["prefill_tok_s"])
            out[f"tg{int(r['decode_tokens'])} @ d{c}"] = float(r["decode_tok_s"])
    except (KeyError, TypeError, ValueError) as e:
        raise BenchError(f"kvsqueeze bench JSON lacks the expected fields ({e!r}): {proc.stdout.strip()[:200]}")
    if "threads" in obj and int(obj["threads"]) != a.threads:
        log(f"warning: kvsqueeze reports {obj['threads']} threads, asked for {a.threads}")
    return out, info, obj


# --------------------------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------------------------
def portable(text: str) -> str:
    """`text` (a path or a command line) without this machine's directories, for committed results:
    the repository becomes relative, the model cache MODELS/, the home folder HOME/, the temp folder OUT/."""
    cache = os.environ.get("KVSQ_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kvsqueeze")
    for prefix, name in ((REPO + os.sep, ""), (os.path.join(cache, "models") + os.sep, "MODELS/"),
                         (os.path.expanduser("~") + os.sep, "HOME/"), (tempfile.gettempdir() + os.sep, "OUT/")):
        text = text.replace(prefix, name)
    return text


def cpu_description() -> str:
    name = fam = mod = None
    try:
        out = subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True, timeout=10).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            v = v.strip()
            if k.strip() == "Model name":
                name = v
            elif k.strip() == "CPU family":
                fam = v
            elif k.strip() == "Model":
                mod = v
    except (OSError, subprocess.SubprocessError):
        pass
    name = name or platform.processor() or "unknown CPU"
    if fam and mod:
        name += f" (family {fam}, model {mod})"
    return f"{name}, {os.cpu_count()} logical CPUs"


def llamacpp_version(bindir: str) -> str:
    """'<commit> (<date>), llama-cpp-python <v> sdist, <llama-bench --version>'."""
    info = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(bindir))), "build-info.txt")
    sdist = commit = None
    if os.path.isfile(info):
        with open(info) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k.startswith("llama-cpp-python sdist"):
                    sdist = v.split()[0] if v.split() else None
                elif k.startswith("llama.cpp commit"):
                    w = v.split()
                    if w:
                        commit = w[0][:12] + (f" ({w[1]})" if len(w) > 1 else "")
    try:
        v = subprocess.run([os.path.join(bindir, "llama-bench"), "--version"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30).stdout
        v = ", ".join(l.strip() for l in v.splitlines() if l.strip())
    except (OSError, subprocess.SubprocessError):
        v = ""
    parts = []
    if commit:
        parts.append(f"commit {commit}")
    if sdist:
        parts.append(f"vendored by llama-cpp-python {sdist} sdist")
    if v:
        parts.append(v)
    return "; ".join(parts) or "unknown"


def llamacpp_system_info(bindir: str, model: str, threads: int) -> str | None:
    exe = os.path.join(bindir, "llama-completion")
    if not os.access(exe, os.X_OK):
        return None
    try:
        p = subprocess.run([exe, "-m", model, "-t", str(threads), "-p", "Hi", "-n", "1", "-no-cnv", "--no-warmup"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in p.stdout.splitlines():
        if "system_info:" in line:
            return line[line.index("system_info:"):].strip()
    return None


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def table_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for m in results:
        for t in m["tests"]:
            l, k = t["llamacpp"], t["kvsqueeze"]
            lm = fmt(l["median"]) + ("*" if l.get("contended") else "") if l else "-"
            km = fmt(k["median"]) + ("*" if k.get("contended") else "") if k else "-"
            ls = f"{l['spread_pct']:.0f}%" if l and l.get("spread_pct") is not None else "-"
            ks = f"{k['spread_pct']:.0f}%" if k and k.get("spread_pct") is not None else "-"
            ratio = f"{t['ratio']:.2f}" if t.get("ratio") is not None else "-"
            rows.append([m["name"], t["test"], lm, ls, km, ks, ratio])
    return rows


HEADER = ["model", "test", "llama.cpp tok/s", "spread", "kvsqueeze tok/s", "spread", "kvsq/llama.cpp"]
BASELINE_HEADER = ["model", "test", "before tok/s", "spread", "after tok/s", "spread", "after/before"]


def text_table(rows: list[list[str]]) -> str:
    w = [max(len(HEADER[i]), *(len(r[i]) for r in rows)) if rows else len(HEADER[i]) for i in range(len(HEADER))]
    def line(cells):
        return "  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(cells))
    out = [line(HEADER), "  ".join("-" * x for x in w)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def markdown(report: dict) -> str:
    meta = report["meta"]
    rows = table_rows(report["models"])
    md = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 5) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    cmds = [f"- llama.cpp: `{c}`" for c in meta["llamacpp_cmds"]] + [f"- kvsqueeze: `{meta['kvsqueeze_cmd']}`"]
    parts = [
        f"Measured {meta['date']} on {meta['cpu']}, {meta['threads']} threads, median of {meta['repeat']} "
        f"alternating rounds.",
        "",
        f"- llama.cpp: {meta['llamacpp_version']}",
    ]
    if meta.get("llamacpp_system_info"):
        parts.append(f"- llama.cpp {meta['llamacpp_system_info']}")
    parts += [f"- script: `{meta['command']}`", ""] + cmds + ["", *md, "",
              "spread = (max - min) / median over the rounds; `*` = at least one round ran while other "
              "processes used more than "
              f"{meta['max_foreign_load']} cores (after retries). Ratio > 1 means kvsqueeze is faster."]
    bound_rows = decode_bound_rows(report["models"])
    if bound_rows:
        parts += ["", "Decode against the memory-bandwidth bound (`--bandwidth`): bound = read bandwidth / bytes read per "
                  "token (weights + f16 K/V in use), medians over the rounds.", "",
                  "| " + " | ".join(BOUND_HEADER) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 6) + "|"]
        parts += ["| " + " | ".join(r) + " |" for r in bound_rows]
    return "\n".join(parts) + "\n"


BOUND_HEADER = ["model", "test", "MB/token", "GB/s", "bound tok/s", "llama.cpp tok/s", "llama.cpp % of bound", "kvsqueeze % of bound"]


def decode_bound_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for m in results:
        for t in m["tests"]:
            b = t.get("bound")
            if not b:
                continue
            l, k = t["llamacpp"], t["kvsqueeze"]
            rows.append([m["name"], t["test"], f"{b['bytes_per_token'] / 1e6:.1f}", f"{b['gb_per_s']:.1f}",
                         fmt(b["bound_tok_s"]), fmt(l["median"]) if l else "-",
                         f"{100 * l['median'] / b['bound_tok_s']:.0f}%" if l else "-",
                         f"{100 * k['median'] / b['bound_tok_s']:.0f}%" if k else "-"])
    return rows


def summarise(samples: list[float], loads: list[float | None], threshold: float) -> dict | None:
    if not samples:
        return None
    med = statistics.median(samples)
    return {"median": round(med, 3), "samples": [round(s, 3) for s in samples],
            "spread_pct": round(100.0 * (max(samples) - min(samples)) / med, 1) if med > 0 else None,
            "foreign_cores": loads,
            "contended": any(l is not None and l > threshold for l in loads)}


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--model", "-m", action="append", default=[], help="extra GGUF model (repeatable)")
    p.add_argument("--no-default-model", action="store_true", help=f"do not bench {DEFAULT_MODEL}")
    p.add_argument("--with-synth", action="store_true",
                   help=f"also bench the synthetic Qwen2.5-0.5B-shaped Q4_K_M-like model ({SYNTH_MODEL}); "
                        f"generated with {SYNTH_PYTHON} {os.path.relpath(SYNTH_SCRIPT, REPO)} if missing")
    p.add_argument("--kvsqueeze", default=os.path.join(REPO, "build", "kvsqueeze"), help="kvsqueeze binary")
    p.add_argument("--llamacpp-bin", default=DEFAULT_LLAMACPP_BIN,
                   help="folder with llama-bench (bench/build_llamacpp.sh prints it)")
    p.add_argument("--baseline", metavar="BIN",
                   help="an earlier kvsqueeze binary measured in llama.cpp's place (before/after in one run)")
    p.add_argument("--skip-kvsqueeze", action="store_true", help="only run llama.cpp")
    p.add_argument("--skip-llamacpp", action="store_true", help="only run kvsqueeze")
    p.add_argument("--repeat", "-r", type=int, default=3, help="alternating rounds per model (median reported)")
    p.add_argument("--threads", "-t", type=int, default=2)
    p.add_argument("--ctx", default="512,4096", help="prompt / context lengths")
    p.add_argument("--n-gen", "-n", type=int, default=128, help="decoded tokens after each context")
    p.add_argument("--llamacpp-no-warmup", action="store_true", help="pass --no-warmup to llama-bench")
    p.add_argument("--wait-idle", type=float, default=60.0,
                   help="max seconds to wait for other processes to go quiet before each measurement (0: don't)")
    p.add_argument("--max-foreign-load", type=float, default=0.25,
                   help="cores used by other processes above which a measurement counts as contended")
    p.add_argument("--retry-contended", type=int, default=2,
                   help="re-measure a run that was contended up to this many times (keeps the least contended)")
    p.add_argument("--timeout", type=float, default=900.0, help="per-command timeout in seconds")
    p.add_argument("--bandwidth", action="store_true",
                   help="measure the read bandwidth and report decode speeds as a share of the memory bound")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    p.add_argument("--markdown", metavar="OUT", help="write the table as Markdown")
    a = p.parse_args(argv)
    try:
        a.ctx = [int(x) for x in a.ctx.split(",") if x.strip()]
        if not a.ctx or any(c <= 0 for c in a.ctx):
            raise ValueError
    except ValueError:
        raise UsageError(f"--ctx expects a comma-separated list of positive integers, got {a.ctx!r}")
    if a.repeat < 1 or a.threads < 1 or a.n_gen < 1:
        raise UsageError("--repeat, --threads and --n-gen must be >= 1")
    if a.skip_kvsqueeze and a.skip_llamacpp:
        raise UsageError("--skip-kvsqueeze and --skip-llamacpp together leave nothing to run")
    return a


def resolve_models(a) -> list[str]:
    models = [] if a.no_default_model else [DEFAULT_MODEL]
    if a.with_synth:
        if not os.path.isfile(SYNTH_MODEL):
            if not os.path.isfile(SYNTH_SCRIPT):
                raise UsageError(f"--with-synth: {SYNTH_MODEL} is missing and {SYNTH_SCRIPT} does not exist "
                                 f"(pass the model with --model instead)")
            if not os.access(SYNTH_PYTHON, os.X_OK):
                raise UsageError(f"--with-synth: {SYNTH_PYTHON} not found (needed to run make_synthetic_gguf.py)")
            os.makedirs(os.path.dirname(SYNTH_MODEL), exist_ok=True)
            log(f"generating {SYNTH_MODEL}")
            tmp = SYNTH_MODEL + ".tmp"
            p = subprocess.run([SYNTH_PYTHON, SYNTH_SCRIPT, *SYNTH_ARGS, "-o", tmp, "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if p.returncode != 0:
                raise UsageError(f"make_synthetic_gguf.py failed: {last_line(p.stderr or p.stdout)}")
            os.replace(tmp, SYNTH_MODEL)
        models.append(SYNTH_MODEL)
    models += [os.path.abspath(m) for m in a.model]
    if not models:
        raise UsageError("no model to benchmark (--no-default-model without --model/--with-synth)")
    for m in models:
        if not os.path.isfile(m):
            hint = " (run scripts/get_model.sh)" if m == DEFAULT_MODEL else ""
            raise UsageError(f"model not found: {m}{hint}")
    seen, out = set(), []
    for m in models:
        if os.path.realpath(m) not in seen:
            seen.add(os.path.realpath(m))
            out.append(m)
    return out


def measure(engine: str, cmd: list[str], a, label: str):
    """Run one measurement, waiting for an idle machine first and re-measuring when contended."""
    best = None
    for attempt in range(1 + a.retry_contended):
        if a.wait_idle > 0:
            wait_idle(a.wait_idle, a.max_foreign_load)
        got = run_llamacpp(cmd, a) if engine == "llamacpp" and not a.baseline else run_kvsqueeze(cmd, a)
        res, info = got[0], got[1]
        fc = info.get("foreign_cores")
        log(f"{label}: {'baseline' if engine == 'llamacpp' and a.baseline else engine}: " + ", ".join(f"{t} {fmt(v)}" for t, v in res.items())
            + f"  [{info['wall_s']:.1f}s wall, {info['cpu_s']:.1f}s cpu"
            + (f", other processes {fc:.2f} cores" if fc is not None else "") + "]"
            + (f" (retry {attempt})" if attempt else ""))
        if best is None or (fc is not None and fc < best[1].get("foreign_cores", 1e9)):
            best = got
        if fc is None or fc <= a.max_foreign_load:
            break
        log("  contended; " + ("measuring again" if attempt < a.retry_contended else "keeping the least contended run"))
    return best


def main(argv=None) -> int:
    try:
        a = parse_args(argv)
        bench = os.path.join(a.llamacpp_bin, "llama-bench")
        if a.baseline:
            a.baseline = os.path.abspath(a.baseline)
            if not os.access(a.baseline, os.X_OK):
                raise UsageError(f"baseline binary not found: {a.baseline}")
            a.skip_llamacpp = False
            global HEADER
            HEADER = BASELINE_HEADER
        elif not a.skip_llamacpp and not os.access(bench, os.X_OK):
            raise UsageError(f"llama-bench not found: {bench} (run bench/build_llamacpp.sh, "
                             f"pass --llamacpp-bin, or --skip-llamacpp)")
        kvsq = os.path.abspath(a.kvsqueeze)
        if not a.skip_kvsqueeze and not os.access(kvsq, os.X_OK):
            raise UsageError(f"kvsqueeze binary not found: {kvsq} (build it, pass --kvsqueeze, or --skip-kvsqueeze)")
        models = resolve_models(a)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2

    tests = test_names(a.ctx, a.n_gen)
    meta = {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu_description(),
        "threads": a.threads,
        "repeat": a.repeat,
        "max_foreign_load": a.max_foreign_load,
        "command": portable(shlex.join(["bench/bench_speed.py", *(argv if argv is not None else sys.argv[1:])])),
        "llamacpp_cmds": [shlex.join(["llama-bench", *c[1:]]).replace(shlex.quote(models[0]), "MODEL")
                          for ctx in a.ctx for c in llamacpp_unit_cmds("llama-bench", models[0], a, ctx)],
        "kvsqueeze_cmd": " ; ".join(shlex.join(["build/kvsqueeze", *kvsqueeze_cmd(kvsq, models[0], a, [c], a.bandwidth)[1:]])
                                    .replace(shlex.quote(models[0]), "MODEL") for c in a.ctx),
    }
    if a.baseline:
        meta["llamacpp_version"] = f"(replaced by the baseline {a.baseline})"
        meta["baseline"] = a.baseline
        meta["llamacpp_cmds"] = []
    elif not a.skip_llamacpp:
        meta["llamacpp_version"] = llamacpp_version(a.llamacpp_bin)
        meta["llamacpp_system_info"] = llamacpp_system_info(a.llamacpp_bin, models[0], a.threads)
    else:
        meta["llamacpp_version"] = "(not run)"

    report = {"meta": meta, "models": []}
    try:
        for model in models:
            name = os.path.basename(model)
            samples = {e: {t: [] for t in tests} for e in ("llamacpp", "kvsqueeze")}
            loads = {e: {t: [] for t in tests} for e in ("llamacpp", "kvsqueeze")}
            raw = {"llamacpp": [], "kvsqueeze": []}
            bounds = {t: [] for t in tests}  # per decode test: (bytes per token, GB/s, bound tok/s) per round
            for rnd in range(a.repeat):
                order = ["kvsqueeze", "llamacpp"] if rnd % 2 == 0 else ["llamacpp", "kvsqueeze"]
                for ctx in a.ctx:
                    for engine in order:
                        if engine == "llamacpp":
                            if a.skip_llamacpp:
                                continue
                            units = ([kvsqueeze_cmd(a.baseline, model, a, [ctx])] if a.baseline
                                     else llamacpp_unit_cmds(bench, model, a, ctx))
                        else:
                            if a.skip_kvsqueeze:
                                continue
                            units = [kvsqueeze_cmd(kvsq, model, a, [ctx], a.bandwidth)]
                        for cmd in units:
                            res, info, rec = measure(engine, cmd, a, f"{name}: round {rnd + 1}/{a.repeat}: ctx {ctx}")
                            if engine == "kvsqueeze" and a.bandwidth:
                                for r in rec["results"]:
                                    bounds[f"tg{int(r['decode_tokens'])} @ d{int(r['ctx'])}"].append(
                                        (r["weight_bytes_per_token"] + r["kv_bytes_per_token"], rec["bandwidth"]["gb_per_s"],
                                         r["bound_tok_s"]))
                            raw[engine].append({"round": rnd + 1, "cmd": portable(shlex.join(cmd)), "load": info,
                                                "records": json.loads(portable(json.dumps(rec)))})  # their model paths too
                            for t, v in res.items():
                                if t in samples[engine]:
                                    samples[engine][t].append(v)
                                    loads[engine][t].append(info.get("foreign_cores"))
            entry = {"model": portable(model), "name": name, "tests": [], "raw": raw}
            for t in tests:
                for engine, skip in (("llamacpp", a.skip_llamacpp), ("kvsqueeze", a.skip_kvsqueeze)):
                    if not skip and len(samples[engine][t]) != a.repeat:
                        raise BenchError(f"{engine} returned {len(samples[engine][t])} results for {t} "
                                         f"in {a.repeat} rounds")
                l = summarise(samples["llamacpp"][t], loads["llamacpp"][t], a.max_foreign_load)
                k = summarise(samples["kvsqueeze"][t], loads["kvsqueeze"][t], a.max_foreign_load)
                ratio = round(k["median"] / l["median"], 3) if l and k and l["median"] > 0 else None
                entry["tests"].append({"test": t, "llamacpp": l, "kvsqueeze": k, "ratio": ratio})
                if bounds[t]:
                    entry["tests"][-1]["bound"] = {"bytes_per_token": statistics.median(b[0] for b in bounds[t]),
                                                   "gb_per_s": statistics.median(b[1] for b in bounds[t]),
                                                   "bound_tok_s": statistics.median(b[2] for b in bounds[t])}
            report["models"].append(entry)
    except BenchError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130

    print()
    print(f"{meta['cpu']}; {a.threads} threads; median of {a.repeat} rounds")
    print(f"llama.cpp: {meta['llamacpp_version']}")
    print(text_table(table_rows(report["models"])))
    for r in decode_bound_rows(report["models"]):
        print(f"{r[0]} {r[1]}: {r[2]} MB/token at {r[3]} GB/s -> bound {r[4]} tok/s; llama.cpp {r[6]}, kvsqueeze {r[7]} of it")
    if any(t[x] and t[x]["contended"] for m in report["models"] for t in m["tests"] for x in ("llamacpp", "kvsqueeze")):
        print(f"* at least one round ran while other processes used > {a.max_foreign_load} cores")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
