#!/usr/bin/env python3
"""Press speed, kvsqueeze next to NVIDIA kvpress: prefill alone and prefill + compression, per press.

For each press, the same context (exactly the same token ids) is prefilled
  * by kvsqueeze: `kvsqueeze bench --press-time` (fresh session without the press, then with it:
    statistics + scoring + compaction + freeing included), and
  * by kvpress 0.5.5 on HF transformers (float32, CPU, the same GGUF): `model(ids, DynamicCache)`
    without a press, then inside `with press(model):`,
with the same thread count, and the script prints both side by side with the ratio
kvpress / kvsqueeze of the prefill + compression time. The token ids come from kvsqueeze
(`--dump-ids`): its tokenizer turns a built-in text (or --prompt-file) into exactly --ctx ids.

Time inside the press calls is also measured on both sides: kvsqueeze wraps the press
(observe + compress = scoring and compaction + finish); here kvpress's `forward_hook` of the press
is wrapped (cache read, compress = scoring, top-k and gather, cache write).

Run from the repository root (build kvsqueeze first):

  $REFENV/bin/python bench/bench_presses_kvpress.py                      # defaults below
  $REFENV/bin/python bench/bench_presses_kvpress.py --ctx 8192 --ratio 0.5 \
      --presses knorm,random,streaming_llm,snapkv,tova,keydiff,observed_attention --threads 2
  ... --kvpress-layers global      # kvpress hooks only the layers kvsqueeze compresses (see below)
  ... --reuse-ours                 # keep the kvsqueeze results and ids of the last run in --workdir
  ... --reuse-ours --reuse-kvpress # only print the table of the last run again
  ... --markdown                   # also print the table as Markdown (docs/BENCHMARKS.md)

Environment (outside the repository, never committed; any path works, REFENV is any folder outside it):

  python3 -m venv $REFENV
  $REFENV/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu \
      || $REFENV/bin/pip install torch          # the CPU wheel if reachable, else PyPI's
  $REFENV/bin/pip install transformers gguf numpy sentencepiece \
      'cachetools>=5.5.2,<6' 'fire>=0.6,<0.7' requests datasets
  $REFENV/bin/pip install --no-deps kvpress==0.5.5   # it pins transformers<5.3: see
                                                          # tests/reference/kvpress/README.md

kvpress 0.5.5 on transformers 5.x needs the two shims of tests/reference/kvpress/make_kvpress_fixtures.py
(cache_position pre-hook; Gemma3 rotary bound per layer), which this script imports.

Layers: kvsqueeze never compresses sliding-window layers (Gemma 3 270M: it compresses 3 of 18).
kvpress 0.5.5 skips them only for Gemma3ForConditionalGeneration; a GGUF Gemma 3 270M loads as
Gemma3ForCausalLM, so by default kvpress compresses all 18 layers (`--kvpress-layers all`, what a
kvpress user gets). `--kvpress-layers global` hooks only the global layers (like kvsqueeze),
`both` measures the two. On a Llama-shaped model both compress every layer.

Attention: kvpress presses run with SDPA, except observed_attention (eager: it needs the attention
matrix). The baseline prefill is always SDPA, so observed_attention's overhead includes eager attention.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, ".."))
DEFAULT_MODEL = os.path.expanduser("~/.cache/kvsqueeze/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
DEFAULT_PRESSES = "knorm,random,streaming_llm,snapkv,tova,keydiff,observed_attention"


# kvsqueeze press name -> (kvpress constructor of a compression ratio, attention implementation).
# Constructor arguments are kvpress defaults, which the kvsqueeze defaults follow.
def kvpress_specs():
    import kvpress as kp

    def press(cls, **kwargs):  # built from the compression ratio
        return lambda r: cls(compression_ratio=r, **kwargs)

    def wrapped(wrapper, inner):  # a kvpress wrapper around such a press
        return lambda r: wrapper(inner(r))

    specs = {name: (build, "sdpa") for name, build in {
        "knorm": press(kp.KnormPress),
        "random": press(kp.RandomPress, seed=42),
        "streaming_llm": press(kp.StreamingLLMPress),
        "snapkv": press(kp.SnapKVPress),
        "tova": press(kp.TOVAPress),
        "keydiff": press(kp.KeyDiffPress),
        "observed_attention": press(kp.ObservedAttentionPress),
        "expected_attention": press(kp.ExpectedAttentionPress),
        "lagkv": press(kp.LagKVPress),
        "non_causal_attn": press(kp.NonCausalAttnPress),
        "leverage": press(kp.LeverageScorePress),
        "compactor": press(kp.CompactorPress),
        "cur": press(kp.CURPress),
        "cap": press(kp.CapPress),
        "pyramidkv": press(kp.PyramidKVPress),
        "adakv(snapkv)": wrapped(kp.AdaKVPress, press(kp.SnapKVPress)),
        "adakv(expected_attention)": wrapped(kp.AdaKVPress, press(kp.ExpectedAttentionPress)),
        "key_rerotation(streaming_llm)": wrapped(kp.KeyRerotationPress, press(kp.StreamingLLMPress)),
        "key_rerotation(snapkv)": wrapped(kp.KeyRerotationPress, press(kp.SnapKVPress)),
    }.items()}
    # Observed attention needs the attention weights, which only the eager implementation returns.
    specs["observed_attention"] = (specs["observed_attention"][0], "eager")
    return specs


def split_presses(text):
    out, cur, depth = [], "", 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        elif ch != " ":
            cur += ch
    out.append(cur)
    return [p for p in out if p]


def run_ours(args, ids_path, ours_path):
    cmd = [args.kvsqueeze, "bench", "-m", args.model, "--ctx", str(args.ctx), "--ratio", str(args.ratio),
           "--press", args.presses, "--press-time", "-t", str(args.threads), "--repeat", str(args.repeat),
           "--json", "--dump-ids", ids_path, "--wait-idle", str(args.wait_idle),
           "--max-foreign-load", str(args.max_foreign_load)] + args.kvsq_arg
    print("[kvsqueeze]", " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"kvsqueeze bench failed (exit {proc.returncode}): {proc.stderr.strip()}")
    out = proc.stdout
    with open(ours_path, "w") as f:
        f.write(out)


def machine_busy_s():
    """Busy CPU seconds of the whole machine since boot (user nice system irq softirq steal)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / os.sysconf("SC_CLK_TCK")


class Clock:
    """Wall and process CPU time since creation, and the cores other processes used meanwhile."""

    def __init__(self):
        self.t0, self.c0, self.b0 = time.perf_counter(), time.process_time(), machine_busy_s()

    def stop(self):
        wall, cpu, b1 = time.perf_counter() - self.t0, time.process_time() - self.c0, machine_busy_s()
        foreign = None if self.b0 is None or b1 is None else max(0.0, (b1 - self.b0 - cpu) / max(wall, 1e-3))
        return wall * 1e3, cpu * 1e3, foreign


def wait_idle(max_s, threshold):
    """Waits up to max_s seconds until other processes use fewer than `threshold` cores."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        c = Clock()
        time.sleep(1.0)
        foreign = c.stop()[2]
        if foreign is None or foreign < threshold:
            return


class HookTimer:
    """Wraps a kvpress press's forward_hook (before __call__ registers it): times every call, and
    with only_global skips the sliding-window layers (returns the output untouched)."""

    def __init__(self, press, layer_types, only_global):
        self.ms = 0.0
        self.calls = 0
        orig = press.forward_hook

        def hook(module, input, kwargs, output):
            if only_global and layer_types and layer_types[module.layer_idx] == "sliding_attention":
                return output
            t0 = time.perf_counter()
            out = orig(module, input, kwargs, output)
            self.ms += (time.perf_counter() - t0) * 1e3
            self.calls += 1
            return out

        press.forward_hook = hook


def kvpress_side(args, ids, names):
    import torch
    sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
    sys.path.insert(0, os.path.join(REPO, "tests", "reference", "kvpress"))
    import make_logits_fixtures as mlf
    import make_kvpress_fixtures as mkf
    from transformers import DynamicCache

    torch.set_num_threads(args.threads)
    # stories260K's GGUF has pad id 0xFFFFFFFF (none), which HF rejects (as in make_kvpress_fixtures.py)
    overrides = {"pad_token_id": None} if "stories" in os.path.basename(args.model) else {}
    m = mlf.load_model(args.model, overrides)
    m.set_attn_implementation("sdpa")
    mkf.install_shims(m)
    layer_types = getattr(m.config, "layer_types", None)
    n_layers = m.config.num_hidden_layers
    n_global = sum(t != "sliding_attention" for t in layer_types) if layer_types else n_layers
    input_ids = torch.tensor([ids], dtype=torch.long)
    specs = kvpress_specs()

    def prefill(press=None, attn="sdpa", only_global=False):
        mkf.set_attn(m, attn)
        cache = DynamicCache(config=m.config)
        timer = HookTimer(press, layer_types, only_global) if press is not None else None
        torch.manual_seed(42)
        wait_idle(args.wait_idle, args.max_foreign_load)
        with torch.no_grad():
            if press is None:
                clock = Clock()
                m(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            else:
                clock = Clock()
                with press(m):
                    mkf.rebind_gemma_rotary(m)
                    m(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            wall, cpu, foreign = clock.stop()
        mkf.set_attn(m, "sdpa")
        lens = [cache.layers[i].keys.shape[2] for i in range(n_layers)]
        return dict(ms=wall, cpu_ms=cpu, foreign_load=foreign, hook_ms=timer.ms if timer else 0.0,
                    hook_calls=timer.calls if timer else 0, cache_lens=lens)

    modes = {"all": [False], "global": [True], "both": [False, True]}[args.kvpress_layers]
    results = {}
    for name in names:
        if name not in specs:
            results[name] = {"skipped": "no kvpress equivalent mapped in kvpress_specs()"}
            print(f"[kvpress] {name}: skipped (not mapped)", file=sys.stderr, flush=True)
            continue
        build, attn = specs[name]
        if name in args.skip_kvpress:
            results[name] = {"skipped": "--skip-kvpress"}
            continue
        r = {"attn": attn, "baseline": [], "press": {}}
        for rep in range(args.repeat):
            r["baseline"].append(prefill())
            for only_global in modes:
                key = "global" if only_global else "all"
                if isinstance(r["press"].get(key), dict):
                    continue  # failed in an earlier repetition
                try:
                    r["press"].setdefault(key, []).append(prefill(build(args.ratio), attn, only_global))
                except Exception as e:  # noqa: BLE001  (kvpress errors, out of memory with eager attention)
                    r["press"][key] = {"skipped": f"{type(e).__name__}: {e}"}
                    mkf.set_attn(m, "sdpa")
        results[name] = r
        print(f"[kvpress] {name}: baseline {min(x['ms'] for x in r['baseline']):.0f} ms, " +
              ", ".join(f"{k} {min(x['ms'] for x in v):.0f} ms (hook {min(x['hook_ms'] for x in v):.0f} ms)"
                        if isinstance(v, list) else f"{k} {v['skipped']}" for k, v in r["press"].items()),
              file=sys.stderr, flush=True)
    import importlib.metadata as md
    import transformers
    meta = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "kvpress": md.version("kvpress")},
            "torch_threads": torch.get_num_threads(), "n_layer": n_layers, "global_layers": n_global,
            "hf_class": type(m).__name__}
    return results, meta


def best(samples, key):
    return min(s[key] for s in samples)


def fastest(samples):
    return min(samples, key=lambda s: s["ms"])


def table(ours, theirs, meta, args):
    rows = []
    ours_by = {r["press"]: r for r in ours["results"]}
    for name in split_presses(args.presses):
        o = ours_by.get(name)
        t = theirs.get(name, {})
        for key in (["all", "global"] if args.kvpress_layers == "both" else [args.kvpress_layers]):
            row = {"press": name, "kvpress_layers": key, "contended": []}
            limit = args.max_foreign_load

            def flag(col, load):
                if load is not None and load > limit:
                    row["contended"].append(col)
            if o:
                flag("kvsq_prefill", o.get("prefill_foreign_load"))
                flag("kvsq_press", o.get("press_prefill_foreign_load"))
                row.update(kvsq_prefill=o["prefill_ms"], kvsq_press=o["press_prefill_ms"], kvsq_overhead=o["overhead"],
                           kvsq_cpu_overhead=o["cpu_overhead"], kvsq_calls=o["press_calls_ms"],
                           kvsq_layers=o["layers_compressed"])
            p = t.get("press", {}).get(key) if "press" in t else None
            if isinstance(p, list):
                base = best(t["baseline"], "ms")
                row.update(kvp_prefill=base, kvp_press=best(p, "ms"), kvp_overhead=(best(p, "ms") - base) / base,
                           kvp_cpu_overhead=(best(p, "cpu_ms") - best(t["baseline"], "cpu_ms")) / best(t["baseline"], "cpu_ms"),
                           kvp_calls=best(p, "hook_ms"), kvp_layers=p[0]["hook_calls"], kvp_attn=t["attn"])
                flag("kvp_prefill", fastest(t["baseline"]).get("foreign_load"))
                flag("kvp_press", fastest(p).get("foreign_load"))
                if o:
                    row["ratio"] = row["kvp_press"] / row["kvsq_press"]
                    row["ratio_calls"] = row["kvp_calls"] / row["kvsq_calls"] if row["kvsq_calls"] > 0 else None
            else:
                row["kvp_skipped"] = (p or t).get("skipped", "not run") if isinstance(p or t, dict) else "not run"
            rows.append(row)
    return rows


def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def print_rows(rows, markdown):
    cols = [("press", "press", "s"), ("kvpress_layers", "kvpress layers", "s"),
            ("kvsq_prefill", "kvsqueeze prefill ms", ".0f"), ("kvsq_press", "kvsqueeze +press ms", ".0f"),
            ("kvsq_overhead", "kvsqueeze overhead", "pct"), ("kvsq_calls", "kvsqueeze press calls ms", ".1f"),
            ("kvp_prefill", "kvpress prefill ms", ".0f"), ("kvp_press", "kvpress +press ms", ".0f"),
            ("kvp_overhead", "kvpress overhead", "pct"), ("kvp_calls", "kvpress press calls ms", ".1f"),
            ("ratio", "ratio kvpress/kvsqueeze (+press)", ".2f"), ("ratio_calls", "ratio kvpress/kvsqueeze (press calls)", ".1f")]

    def cell(row, key, spec):
        v = row.get(key)
        if v is None:
            return row.get("kvp_skipped", "—") if key == "kvp_press" else "—"
        if spec == "pct":
            return f"{100 * v:+.1f}%"
        return format(v, spec) + ("*" if key in row.get("contended", []) else "")

    if markdown:
        print("| " + " | ".join(c[1] for c in cols) + " |")
        print("|" + "|".join("---" for _ in cols) + "|")
        for r in rows:
            print("| " + " | ".join(cell(r, k, s) for k, _, s in cols) + " |")
    else:
        widths = [max(len(h), *(len(cell(r, k, s)) for r in rows)) for k, h, s in cols]
        print("  ".join(h.rjust(w) for (_, h, _), w in zip(cols, widths)))
        for r in rows:
            print("  ".join(cell(r, k, s).rjust(w) for (k, _, s), w in zip(cols, widths)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--presses", default=DEFAULT_PRESSES, help="comma-separated kvsqueeze press expressions")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="measurements per press on each side; the fastest counts")
    ap.add_argument("--wait-idle", type=float, default=0.0, help="before each run, wait up to this many seconds "
                    "for other processes to use fewer than --max-foreign-load cores (both sides)")
    ap.add_argument("--max-foreign-load", type=float, default=0.25, help="runs where other processes used more "
                    "cores than this are marked * (contended)")
    ap.add_argument("--kvsqueeze", default=os.path.join(REPO, "build", "kvsqueeze"))
    ap.add_argument("--kvsq-arg", action="append", default=[], help="extra argument for kvsqueeze bench (repeatable), "
                    "e.g. --kvsq-arg=--random-ids")
    ap.add_argument("--kvpress-layers", choices=["all", "global", "both"], default="all")
    ap.add_argument("--skip-kvpress", nargs="*", default=[], help="presses not to run on the kvpress side")
    ap.add_argument("--workdir", default="/tmp/kvsq_press_bench", help="where ids and both results are written")
    ap.add_argument("--reuse-ours", action="store_true", help="reuse kvsqueeze.json and ids.json in --workdir")
    ap.add_argument("--reuse-kvpress", action="store_true", help="reuse kvpress.json in --workdir (only the table is made)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    os.makedirs(args.workdir, exist_ok=True)
    ids_path = os.path.join(args.workdir, "ids.json")
    ours_path = os.path.join(args.workdir, "kvsqueeze.json")
    if not args.reuse_ours:
        run_ours(args, ids_path, ours_path)
    with open(ours_path) as f:
        ours = json.loads(f.read().strip().splitlines()[-1])
    with open(ids_path) as f:
        ids = json.load(f)["ids"]
    assert len(ids) == args.ctx, f"{len(ids)} ids, expected {args.ctx}"
    names = split_presses(args.presses)
    kvp_path = os.path.join(args.workdir, "kvpress.json")
    if args.reuse_kvpress:
        with open(kvp_path) as f:
            saved = json.load(f)
        theirs, meta = saved["results"], saved["meta"]
    else:
        theirs, meta = kvpress_side(args, ids, names)
    rows = table(ours, theirs, meta, args)
    if not args.reuse_kvpress:
        with open(kvp_path, "w") as f:
            json.dump({"meta": meta, "results": theirs, "rows": rows}, f)

    print(f"model {os.path.basename(args.model)}, {args.ctx} tokens ({ours['source']}), ratio {args.ratio}, "
          f"{args.threads} threads each, best of {args.repeat}")
    print(f"kvsqueeze: kv {ours['kv_type']}, chunk {ours['chunk']}, compresses {ours['compressible_layers']} of "
          f"{ours['n_layer']} layers (sliding-window layers never)")
    print(f"kvpress {meta['versions']['kvpress']} on transformers {meta['versions']['transformers']}, torch "
          f"{meta['versions']['torch']}, float32, {meta['hf_class']}, compresses "
          + ({"all": f"all {meta['n_layer']} layers", "global": f"{meta['global_layers']} global layers only",
              "both": "all layers / global layers only"}[args.kvpress_layers]))
    print_rows(rows, False)
    print(f"* = contended: other processes used more than {args.max_foreign_load} cores during that run")
    if args.markdown:
        print()
        print_rows(rows, True)


if __name__ == "__main__":
    main()
