#!/usr/bin/env python3
"""One kvpress-style pipeline call, kvsqueeze from Python next to NVIDIA kvpress 0.5.5 on PyTorch CPU.

The call timed is what a kvpress user writes:

    pipe = pipeline("kv-press-text-generation", model=...)
    pipe(context, question=question, press=Press(compression_ratio=r), max_new_tokens=32)["answer"]

that is: chat template, tokenizing, prefill of the long context with the press compressing its KV
cache, the question, and a greedy answer of up to --max-new-tokens tokens. Both sides load the same
GGUF file:
  * kvsqueeze: `kvsqueeze.pipeline(..., model=GGUF, n_threads=T)` (its own venv, run as a subprocess
    of this script: `--worker kvsqueeze`), KV cache f16 (its default);
  * kvpress: `transformers.pipeline("kv-press-text-generation", model=HF model, tokenizer=HF tokenizer)`,
    the model and tokenizer loaded by transformers from the GGUF (float32, CPU, SDPA attention, as in
    bench/bench_presses_kvpress.py), `torch.set_num_threads(T)`.
The press is the same class in both (kvsqueeze mirrors kvpress's names and defaults), with the same
compression ratio; "none" is the uncompressed call (press=None). Each side makes one untimed warm-up
call, then --repeats timed calls per press (round-robin over the presses); the table shows the median
(and min) wall time of a call, the ratio kvpress / kvsqueeze of the medians, and both answers. Model
loading is not timed (reported apart). Each timed call also records its process CPU time and the
cores other processes used meanwhile ("foreign load"; above 0.25 the time is marked * in the table).

Context: data/demo/alice_chapter1.txt (the demo's document, ~2.7K tokens with the chat template) as
is, or its longest prefix (cut at whitespace) of at most --context-tokens tokens; above the chapter's
length (4K, 16K) the chapter is followed by the public-domain haystack text (data/haystack.txt) cut
the same way, so the question's answer sits at the start of a long document; the question: line
--question of data/demo/questions.txt (default 1: "What was the name of Alice's cat?").

Run from the repository root with the torch venv (kvpress 0.5.5 and gguf on PYTHONPATH):

  pip install --no-index --no-deps --target $KVSITE .gpu-carry/wheels/*.whl   # once, any folder
  PYTHONPATH=$KVSITE ~/.cache/kvsqueeze/torch-venv/bin/python bench/bench_pipeline_kvpress.py \\
      --presses snapkv,expected_attention,knorm --ratio 0.5 --repeats 3 --threads 2 --json out.json
  ... --context-tokens 500 --repeats 1                     # a quick check
  ... --kvsqueeze-python PATH                              # the python that imports kvsqueeze
                                                           # (default ~/.cache/kvsqueeze/venv/bin/python)

kvpress 0.5.5 pins transformers<5.3; on later transformers the shims of bench/gpu/bench_torch_anchor.py
(import_kvpress: `datasets` stub; adapt: cache_position and past_key_values for the press's forward hook)
make it run; the ones that ran are listed in the JSON ("shims").
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from bench_presses_kvpress import Clock  # noqa: E402  (wall, CPU and foreign load of a call)

DOC = os.path.join(REPO, "data", "demo", "alice_chapter1.txt")
FILLER = os.path.join(REPO, "data", "haystack.txt")  # appended when --context-tokens exceeds the chapter
QUESTIONS = os.path.join(REPO, "data", "demo", "questions.txt")
KVSQ_PYTHON = os.path.expanduser("~/.cache/kvsqueeze/venv/bin/python")
# Press name -> class name; the same in kvsqueeze and kvpress.
PRESSES = {"snapkv": "SnapKVPress", "expected_attention": "ExpectedAttentionPress", "knorm": "KnormPress",
           "tova": "TOVAPress", "streaming_llm": "StreamingLLMPress", "keydiff": "KeyDiffPress",
           "random": "RandomPress", "kvzip": "KVzipPress"}
CONTENDED = 0.25  # foreign load (cores) above which a call is marked contended


def default_model():
    out = subprocess.run([os.path.join(REPO, "scripts", "get_model.sh"), "qwen2.5-0.5b-instruct"],
                         capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        sys.exit(f"scripts/get_model.sh failed: {out.stderr.strip()}")
    return out.stdout.strip().splitlines()[-1]


def run_calls(call, presses, repeats, log):
    """One untimed warm-up call (the first press), then `repeats` rounds over the presses.
    `call(name)` returns the answer. Returns per press: the times and the answer."""
    res = {name: {"runs": []} for name in presses}
    t0 = time.perf_counter()
    call(presses[0])
    log(f"warm-up ({presses[0]}) {time.perf_counter() - t0:.2f} s")
    for rep in range(repeats):
        for name in presses:
            clock = Clock()
            answer = call(name)
            wall_ms, cpu_ms, foreign = clock.stop()
            r = res[name]
            r["runs"].append({"s": wall_ms / 1e3, "cpu_s": cpu_ms / 1e3, "foreign_load": foreign})
            if "answer" in r and r["answer"] != answer:
                r.setdefault("other_answers", []).append(answer)
            r["answer"] = answer
            log(f"{name} #{rep + 1}: {wall_ms / 1e3:.2f} s (cpu {cpu_ms / 1e3:.2f} s, foreign load "
                f"{'?' if foreign is None else f'{foreign:.2f}'}): {answer!r}")
    for r in res.values():
        s = [x["s"] for x in r["runs"]]
        r["median_s"], r["min_s"] = statistics.median(s), min(s)
    return res


# ----------------------------------------------------------------------------------------------------
# kvsqueeze side (run in kvsqueeze's venv: `--worker kvsqueeze`, the spec as JSON on stdin)
# ----------------------------------------------------------------------------------------------------
def kvsqueeze_worker():
    spec = json.load(sys.stdin)
    import kvsqueeze

    def log(msg):
        print(f"[kvsqueeze] {msg}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    pipe = kvsqueeze.pipeline("kv-press-text-generation", model=spec["model"], n_threads=spec["threads"])
    load_s = time.perf_counter() - t0
    log(f"model loaded in {load_s:.2f} s")
    presses = {n: (getattr(kvsqueeze, PRESSES[n])(compression_ratio=spec["ratio"]) if n != "none" else None)
               for n in spec["presses"]}
    engine = pipe.engine

    def call(name):
        return pipe(spec["context"], question=spec["question"], press=presses[name],
                    max_new_tokens=spec["max_new_tokens"])["answer"]

    res = run_calls(call, spec["presses"], spec["repeats"], log)
    meta = {"kvsqueeze": md.version("kvsqueeze"), "python": platform.python_version(), "load_s": load_s,
            "threads": spec["threads"], "kv_type": "f16",
            "plans": {n: (p.plan() if p is not None else None) for n, p in presses.items()}}
    ids = {"context": list(engine.context_ids(spec["context"])),
           "question": list(engine.question_ids(spec["context"], spec["question"]))}
    print(json.dumps({"meta": meta, "results": res, "ids": ids}))


def run_kvsqueeze(args, spec):
    cmd = [args.kvsqueeze_python, os.path.abspath(__file__), "--worker", "kvsqueeze"]
    print(f"[driver] kvsqueeze side: {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, input=json.dumps(spec), stdout=subprocess.PIPE, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"kvsqueeze side failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------
# kvpress side (in this process: the torch venv)
# ----------------------------------------------------------------------------------------------------
def reference_loaders():
    """tests/reference/make_logits_fixtures.py: GGUF -> HF model (float32, CPU) and HF tokenizer."""
    sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
    import make_logits_fixtures as mlf
    return mlf


def n_context_tokens(tok, context):
    """Tokens of the context as kvpress's pipeline builds it (chat template, cut before the question)."""
    return reference_loaders().n_context_tokens(tok, context)


def cut_document(tok, text, max_tokens):
    """The longest prefix of `text`, cut at whitespace, whose context is at most max_tokens tokens."""
    if max_tokens <= 0 or n_context_tokens(tok, text) <= max_tokens:
        return text
    cuts = [i for i in range(1, len(text)) if text[i].isspace() and not text[i - 1].isspace()]
    lo, hi = 0, len(cuts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if n_context_tokens(tok, text[:cuts[mid]]) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return text[:cuts[lo]]


def kvpress_side(args, spec, mlf, tok):
    import warnings

    import torch
    sys.path.insert(0, os.path.join(HERE, "gpu"))
    import bench_torch_anchor as anchor  # kvpress <-> transformers 5.x shims

    warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated", category=FutureWarning)

    def log(msg):
        print(f"[kvpress] {msg}", file=sys.stderr, flush=True)

    torch.set_num_threads(spec["threads"])
    kvpress = anchor.import_kvpress()  # registers the pipeline
    # KVzipPress loads AutoTokenizer.from_pretrained(model.config.name_or_path), a hub name that does not
    # exist for a GGUF-loaded model (and no hub here): hand it the tokenizer loaded from the same GGUF.
    import kvpress.presses.kvzip_press as kvzip_module

    class GgufTokenizer:
        @staticmethod
        def from_pretrained(*_args, **_kwargs):
            return tok
    kvzip_module.AutoTokenizer = GgufTokenizer
    from transformers import pipeline
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # loading progress bars
    t0 = time.perf_counter()
    model = mlf.load_model(spec["model"], {})
    model.set_attn_implementation("sdpa")
    pipe = pipeline("kv-press-text-generation", model=model, tokenizer=tok, device="cpu")
    load_s = time.perf_counter() - t0
    log(f"model loaded in {load_s:.2f} s ({type(model).__name__}, float32, sdpa)")
    presses = {n: (anchor.adapt(getattr(kvpress, PRESSES[n])(compression_ratio=spec["ratio"])) if n != "none"
                   else None) for n in spec["presses"]}

    def call(name):
        return pipe(spec["context"], question=spec["question"], press=presses[name],
                    max_new_tokens=spec["max_new_tokens"])["answer"]

    res = run_calls(call, spec["presses"], spec["repeats"], log)
    pre = pipe.preprocess(spec["context"], questions=[spec["question"]], answer_prefix="", max_context_length=10**9)
    ids = {"context": pre["context_ids"][0].tolist(), "question": pre["questions_ids"][0][0].tolist()}
    import dataclasses
    meta = {"kvpress": md.version("kvpress"), "torch": torch.__version__, "transformers": md.version("transformers"),
            "gguf": md.version("gguf"), "python": platform.python_version(), "load_s": load_s,
            "threads": torch.get_num_threads(), "dtype": "float32", "attn_implementation": "sdpa",
            "hf_class": type(model).__name__, "shims": sorted(anchor.SHIMS),
            "presses": {n: ({"class": type(p).__name__, **{k: v for k, v in dataclasses.asdict(p).items()
                                                          if isinstance(v, (int, float, str, bool, type(None)))}}
                            if p is not None else None) for n, p in presses.items()}}
    return {"meta": meta, "results": res, "ids": ids}


# ----------------------------------------------------------------------------------------------------
def machine():
    info = {"cpu": platform.processor() or platform.machine(), "logical_cpus": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["cpu"] = fields.get("Model name", info["cpu"])
        for k in ("CPU(s)", "Thread(s) per core", "Core(s) per socket", "Socket(s)"):
            if k in fields:
                info[k] = fields[k]
    except OSError:
        pass
    return info


def fmt_s(r):
    mark = "*" if any((x["foreign_load"] or 0) > CONTENDED for x in r["runs"]) else ""
    return f"{r['median_s']:.2f} ({r['min_s']:.2f}){mark}"


def document_name(context):
    """Which files the context came from (the chapter, and the filler text when it runs past it)."""
    with open(DOC) as f:
        chapter = f.read().rstrip()
    name = os.path.relpath(DOC, REPO)
    return name + (f" + {os.path.relpath(FILLER, REPO)}" if len(context) > len(chapter) else "")


def print_table(rows, markdown):
    head = ["press", "kvsqueeze s", "kvpress s", "ratio kvpress/kvsqueeze"]
    body = [[r["press"], r["kvsqueeze_cell"], r["kvpress_cell"], f"{r['ratio']:.2f}"] for r in rows]
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join(["---"] + ["---:"] * 3) + "|")
        for b in body:
            print("| " + " | ".join(b) + " |")
    else:
        w = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
        print("  ".join(h.ljust(w[0]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(head)))
        for b in body:
            print("  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(b)))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--worker" and sys.argv[2] == "kvsqueeze":
        return kvsqueeze_worker()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--model", help="GGUF file (default: scripts/get_model.sh qwen2.5-0.5b-instruct)")
    ap.add_argument("--presses", default="snapkv", help=f"comma-separated, of {', '.join(PRESSES)}; "
                    "the uncompressed call (none) is always measured too")
    ap.add_argument("--ratio", type=float, default=0.5, help="compression_ratio (fraction of the context evicted)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per press on each side")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--context-tokens", type=int, default=0,
                    help="cut the document to at most this many context tokens (0: the whole document)")
    ap.add_argument("--question", type=int, default=1, help="line of data/demo/questions.txt (1-based)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--kvsqueeze-python", default=KVSQ_PYTHON, help="a python that imports kvsqueeze")
    ap.add_argument("--json", metavar="OUT", help="write the configuration, machine, versions and every time")
    ap.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm loads: GGUF de-quantizing progress bar

    names = [p.strip() for p in args.presses.split(",") if p.strip()]
    for n in names:
        if n not in PRESSES:
            ap.error(f"unknown press '{n}' (known: {', '.join(PRESSES)})")
    names = ["none"] + [n for n in names if n != "none"]
    model = args.model or default_model()
    with open(QUESTIONS) as f:
        question = [q.strip() for q in f if q.strip()][args.question - 1]
    with open(DOC) as f:
        document = f.read()
    if args.context_tokens > 0:
        with open(FILLER) as f:
            document = document.rstrip() + "\n\n" + f.read()  # cut_document keeps what fits

    mlf = reference_loaders()
    tok = mlf.load_tokenizer(model)
    context = cut_document(tok, document, args.context_tokens)
    spec = {"model": model, "context": context, "question": question, "presses": names, "ratio": args.ratio,
            "threads": args.threads, "repeats": args.repeats, "max_new_tokens": args.max_new_tokens}
    print(f"[driver] {os.path.basename(model)}; context {n_context_tokens(tok, context)} tokens "
          f"({len(context)} characters of {document_name(context)}); question {question!r}",
          file=sys.stderr, flush=True)

    ours = run_kvsqueeze(args, spec)      # first, in its own process, before torch loads the model here
    theirs = kvpress_side(args, spec, mlf, tok)

    # The same job: the same context and question token ids on both sides (chat template included).
    same_ids = {k: ours["ids"][k] == theirs["ids"][k] for k in ("context", "question")}
    n_ids = {side: {k: len(v) for k, v in d["ids"].items()} for side, d in (("kvsqueeze", ours), ("kvpress", theirs))}
    rows = []
    for n in names:
        o, t = ours["results"][n], theirs["results"][n]
        rows.append({"press": n if n == "none" else f"{n} @{args.ratio:g}", "name": n,
                     "kvsqueeze_cell": fmt_s(o), "kvpress_cell": fmt_s(t), "ratio": t["median_s"] / o["median_s"],
                     "kvsqueeze_answer": o["answer"], "kvpress_answer": t["answer"],
                     # answer lengths (HF tokenizer): how many tokens each side decoded, about
                     "answer_tokens": {"kvsqueeze": len(tok.encode(o["answer"], add_special_tokens=False)),
                                       "kvpress": len(tok.encode(t["answer"], add_special_tokens=False))}})

    om, tm = ours["meta"], theirs["meta"]
    same = "the same ids on both sides" if all(same_ids.values()) else \
        f"ids DIFFER: {', '.join(k for k, v in same_ids.items() if not v)} (token counts {n_ids})"
    print(f"model {os.path.basename(model)}; context: {document_name(context)}, {n_ids['kvsqueeze']['context']} "
          f"tokens, question {question!r} ({n_ids['kvsqueeze']['question']} tokens with the template's tail): {same}; "
          f"max_new_tokens {args.max_new_tokens}, greedy; "
          f"{args.threads} threads each; median (min) of {args.repeats} calls after one warm-up, seconds")
    print(f"kvsqueeze {om['kvsqueeze']} (Python {om['python']}, KV f16); kvpress {tm['kvpress']} on transformers "
          f"{tm['transformers']}, torch {tm['torch']} ({tm['hf_class']}, float32, sdpa, CPU)")
    print_table(rows, False)
    print(f"* = another process used more than {CONTENDED} cores during a call")
    if args.markdown:
        print()
        print_table(rows, True)
    print()
    for r in rows:
        print(f"{r['press']}:")
        print(f"  kvsqueeze: {r['kvsqueeze_answer']!r}")
        print(f"  kvpress:   {r['kvpress_answer']!r}" + ("  (the same)" if r["kvsqueeze_answer"] == r["kvpress_answer"] else ""))

    if args.json:
        out = {"benchmark": "bench/bench_pipeline_kvpress.py",
               "command": "bench/bench_pipeline_kvpress.py " + " ".join(sys.argv[1:]),
               "model": os.path.basename(model), "model_bytes": os.path.getsize(model),
               "document": document_name(context), "context_chars": len(context), "question": question,
               "tokens": n_ids["kvsqueeze"], "same_ids": same_ids,
               "ratio": args.ratio, "threads": args.threads, "repeats": args.repeats,
               "max_new_tokens": args.max_new_tokens, "machine": machine(),
               "kvsqueeze": {k: v for k, v in ours.items() if k != "ids"},
               "kvpress": {k: v for k, v in theirs.items() if k != "ids"},
               "rows": [{k: v for k, v in r.items() if not k.endswith("_cell")} |
                        {"kvsqueeze_median_s": ours["results"][r["name"]]["median_s"],
                         "kvsqueeze_min_s": ours["results"][r["name"]]["min_s"],
                         "kvpress_median_s": theirs["results"][r["name"]]["median_s"],
                         "kvpress_min_s": theirs["results"][r["name"]]["min_s"]} for r in rows]}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
