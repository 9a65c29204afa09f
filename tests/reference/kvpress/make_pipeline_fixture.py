#!/usr/bin/env python3
"""End-to-end kvpress pipeline fixture on the default model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M).

Runs kvpress 0.5.5's own `pipeline("kv-press-text-generation", ...)` (chat template, context/question
split, prefill with the press, greedy answer) for a few presses at compression_ratio 0.5 and without a
press, on a few NIAH- and RULER-style samples, and records per sample:
  - the context and question text exactly as handed to the pipeline (plus answer_prefix),
  - the context and question token ids the pipeline built (its preprocess() output),
  - per press, the positions kept per (layer, KV head) after compression (hex bitmasks) and the
    reference scores of the slots nearest to each cut,
  - per press (and without one), the greedy answer: text and token ids (EOS included when generated).

Regenerate (from the repository root; ~15 min on 2 loaded CPU cores):

  /tmp/refenv/bin/python tests/reference/kvpress/make_pipeline_fixture.py
  /tmp/refenv/bin/python tests/reference/kvpress/make_pipeline_fixture.py --samples niah_single --presses snapkv

Environment: as for make_kvpress_fixtures.py (kvpress 0.5.5 installed with --no-deps on transformers
5.23, plus cachetools, fire, requests, datasets). Deterministic: float32, CPU, one thread,
torch.manual_seed(SEED) before every pipeline call. See tests/reference/kvpress/README.md
("End-to-end pipeline fixture").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
import make_logits_fixtures as mlf  # noqa: E402
import make_kvpress_fixtures as mkf  # noqa: E402  (shims, versions)

import torch  # noqa: E402

OUT = os.path.join(REPO, "tests", "fixtures", "kvpress", "pipeline_qwen05.json")
MODEL_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
SEED = 42
RATIO = 0.5
MAX_NEW_TOKENS = 24
# Per (layer, head), the slots nearest the cut with kvpress's scores: at least NEAR_CUT lowest kept and
# highest evicted, and, when an evicted slot lies within BAND_REL (relative) of the lowest kept score,
# every slot within that band, so that ties (e.g. KnormPress on repeated tokens in layer 0, where RoPE
# leaves the norm unchanged) are all there.
NEAR_CUT = 8
BAND_REL = 1e-3
TARGET_TOKENS = 1050  # context tokens (chat template included), approximately


def presses():
    import kvpress as kp
    return {
        "none": lambda: None,
        "knorm": lambda: kp.KnormPress(compression_ratio=RATIO),
        "streaming_llm": lambda: kp.StreamingLLMPress(compression_ratio=RATIO),
        "snapkv": lambda: kp.SnapKVPress(compression_ratio=RATIO),
        "tova": lambda: kp.TOVAPress(compression_ratio=RATIO),
        "expected_attention": lambda: kp.ExpectedAttentionPress(compression_ratio=RATIO),
    }


# ----------------------------------------------------------------------------------------------
# samples: NIAH- and RULER-style prompts (templates as in src/eval/niah.cpp and RULER)
# ----------------------------------------------------------------------------------------------
def haystack_sentences():
    with open(os.path.join(REPO, "data", "haystack.txt")) as f:
        text = f.read()
    words = text.split()
    out, cur = [], []
    for w in words:
        cur.append(w)
        if w.endswith((".", "!", "?")) and len(cur) > 3:
            out.append(" ".join(cur))
            cur = []
    return out


def fill(tok, build, pieces, target):
    """Largest prefix of `pieces` whose built context (chat-templated) stays within `target` tokens."""
    lo, hi = 1, len(pieces)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if n_context_tokens(tok, build(pieces[:mid])) <= target:
            lo = mid
        else:
            hi = mid - 1
    return build(pieces[:lo])


n_context_tokens = mlf.n_context_tokens


def insert_at(pieces, needle, depth):
    k = int(round(len(pieces) * depth))
    return pieces[:k] + [needle] + pieces[k:]


def sample_niah_single(tok, rng):
    needle = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
    sents = haystack_sentences()[40:]

    def build(p):
        return "This is a very long story book: <book> " + " ".join(insert_at(p, needle, 0.5)) + " </book>."
    return dict(name="niah_single", kind="NIAH single needle, Alice haystack, depth 0.5",
                context=fill(tok, build, sents, TARGET_TOKENS),
                question="Based on the content of the book, Question: What is the best thing to do in San Francisco?",
                answer_prefix="", expected="eat a sandwich and sit in Dolores Park on a sunny day")


def sample_passkey(tok, rng):
    key = str(rng.randint(10000, 99999))
    noise = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
    needle = f"The pass key is {key}. Remember it. {key} is the pass key."
    head = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
            "I will quiz you about the important information there.\n")

    def build(p):
        return head + " ".join(insert_at(p, needle, 0.3))
    return dict(name="niah_passkey", kind="passkey retrieval in repeated noise, depth 0.3",
                context=fill(tok, build, [noise] * 200, TARGET_TOKENS), question="What is the pass key?",
                answer_prefix="The pass key is", expected=key)


def sample_ruler_multikey(tok, rng):
    with open(os.path.join(REPO, "data", "words_nouns.txt")) as f:
        nouns = [w.strip() for w in f if w.strip()]
    keys = rng.sample(nouns, 4)
    values = [str(rng.randint(1000000, 9999999)) for _ in keys]
    needles = [f"One of the special magic numbers for {k} is: {v}." for k, v in zip(keys, values)]
    depths = [0.15, 0.4, 0.65, 0.85]
    sents = haystack_sentences()[400:]
    query = keys[2]

    def build(p):
        p = list(p)
        for n, d in sorted(zip(needles, depths), key=lambda x: -x[1]):
            p = insert_at(p, n, d)
        return ("Some special magic numbers are hidden within the following text. Make sure to memorize it. "
                "I will quiz you about the numbers afterwards.\n" + " ".join(p))
    return dict(name="ruler_niah_multikey", kind="RULER niah_multikey_1 style: 4 keyed needles in an essay haystack",
                context=fill(tok, build, sents, TARGET_TOKENS),
                question=f"What are all the special magic numbers for {query} mentioned in the provided text?",
                answer_prefix=f"The special magic numbers for {query} mentioned in the provided text are",
                expected=values[2], needles=needles)


def sample_ruler_vt(tok, rng):
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    names = ["".join(rng.choice(letters) for _ in range(5)) for _ in range(5)]
    value = str(rng.randint(10000, 99999))
    chain = [f"VAR {names[0]} = {value}."] + [f"VAR {names[i + 1]} = VAR {names[i]}." for i in range(4)]
    noise = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
    depths = [0.1, 0.3, 0.5, 0.7, 0.9]

    def build(p):
        p = list(p)
        for n, d in sorted(zip(chain, depths), key=lambda x: -x[1]):
            p = insert_at(p, n, d)
        return ("Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
                + "\n".join(p) + "\n")
    return dict(name="ruler_vt", kind="RULER vt style: a 5-variable chain in repeated noise",
                context=fill(tok, build, [noise] * 200, TARGET_TOKENS),
                question=f"Question: Find all variables that are assigned the value {value} in the text above.",
                answer_prefix=(f"Answer: According to the chain(s) of variable assignment in the text above, 5 variables "
                               f"are assigned the value {value}, they are: "),
                expected=" ".join(names))


SAMPLES = {"niah_single": sample_niah_single, "niah_passkey": sample_passkey,
           "ruler_niah_multikey": sample_ruler_multikey, "ruler_vt": sample_ruler_vt}


# ----------------------------------------------------------------------------------------------
def hex_mask(kept, n):
    """Bit p%4 of hex digit p//4 is set iff position p is kept."""
    s = set(kept)
    return "".join("0123456789abcdef"[sum(1 << j for j in range(4) if 4 * d + j in s)] for d in range((n + 3) // 4))


def f9(x):
    return float(f"{float(x):.9g}")


class Capture:
    """Wraps the press's compress() and score() to record, per layer, what it keeps (matched rows of the
    compressed cache against the full one) and the scores it ranked."""

    def __init__(self, press):
        self.kept, self.scores, self.n = {}, {}, {}
        if press is None:
            return
        orig_compress, orig_score = press.compress, press.score

        def score(module, hidden_states, keys, values, attentions, kwargs):
            s = orig_score(module, hidden_states, keys, values, attentions, kwargs)
            self.scores[int(module.layer_idx)] = s[0].detach().clone().float()
            return s

        def compress(module, hidden_states, keys, values, attentions, kwargs):
            k2, v2 = orig_compress(module, hidden_states, keys, values, attentions, kwargs)
            li = int(module.layer_idx)
            self.n[li] = int(keys.shape[2])
            self.kept[li] = [sorted(k) for k in mkf.match_kept(keys.detach(), values.detach(), k2.detach(), v2.detach())]
            assert all(-1 not in k for k in self.kept[li]), f"layer {li}: unmatched kept rows"
            return k2, v2
        object.__setattr__(press, "score", score)
        object.__setattr__(press, "compress", compress)

    def layers(self):
        out = []
        for li in sorted(self.kept):
            n, kept = self.n[li], self.kept[li]
            rec = {"layer": li, "n_kept": [len(k) for k in kept], "kept_hex": [hex_mask(k, n) for k in kept]}
            s = self.scores.get(li)
            if s is not None:
                near = []
                for h, k in enumerate(kept):
                    ks = set(k)
                    sc = s[h].tolist()
                    kept_low = sorted(k, key=lambda p: sc[p])
                    ev_high = sorted((p for p in range(n) if p not in ks), key=lambda p: -sc[p])
                    cut = sc[kept_low[0]]
                    band = BAND_REL * abs(cut)
                    if ev_high and abs(sc[ev_high[0]] - cut) <= band:  # else nothing can swap (StreamingLLM's 0/1)
                        kept_low = [p for i, p in enumerate(kept_low) if i < NEAR_CUT or abs(sc[p] - cut) <= band]
                        ev_high = [p for i, p in enumerate(ev_high) if i < NEAR_CUT or abs(sc[p] - cut) <= band]
                    else:
                        kept_low, ev_high = kept_low[:NEAR_CUT], ev_high[:NEAR_CUT]
                    near.append({"kept": [[p, f9(sc[p])] for p in kept_low],
                                 "evicted": [[p, f9(sc[p])] for p in ev_high]})
                rec["near_cut"] = near
            out.append(rec)
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", nargs="*", default=list(SAMPLES))
    ap.add_argument("--presses", nargs="*", default=None)
    ap.add_argument("-o", "--out", default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import kvpress  # noqa: F401  (registers the pipeline, patches attention)
    from transformers import pipeline

    path = os.path.expanduser("~/.cache/kvsqueeze/models/" + MODEL_FILE)
    t0 = time.time()
    model = mlf.load_model(path, {})
    model.set_attn_implementation("sdpa")
    mkf.install_shims(model)
    tok = mlf.load_tokenizer(path)
    pipe = pipeline("kv-press-text-generation", model=model, tokenizer=tok)
    print(f"loaded in {time.time() - t0:.1f}s", flush=True)

    # What the pipeline builds and generates (its own code runs unchanged; these only record).
    seen = {}
    orig_pre = pipe.preprocess

    def preprocess(*a, **k):
        r = orig_pre(*a, **k)
        seen["context_ids"] = r["context_ids"][0].tolist()
        seen["question_ids"] = [q[0].tolist() for q in r["questions_ids"]]
        return r
    pipe.preprocess = preprocess
    orig_decode = tok.decode

    def decode(ids, *a, **k):
        seen.setdefault("answers", []).append([int(i) for i in torch.as_tensor(ids).tolist()])
        return orig_decode(ids, *a, **k)
    tok.decode = decode

    specs = presses()
    names = args.presses or list(specs)
    rng = random.Random(SEED)
    samples = []
    for sname in SAMPLES:  # always draw every sample so the random values do not depend on --samples
        s = SAMPLES[sname](tok, rng)
        if sname in args.samples:
            samples.append(s)

    out_samples = []
    for s in samples:
        rec = {k: v for k, v in s.items()}
        rec["runs"] = {}
        for pname in names:
            press = specs[pname]()
            cap = Capture(press)
            seen.clear()
            t = time.time()
            torch.manual_seed(SEED)
            with torch.no_grad():
                res = pipe(s["context"], question=s["question"], answer_prefix=s["answer_prefix"] or None,
                           press=press, max_new_tokens=MAX_NEW_TOKENS)
            if "context_ids" not in rec:
                rec["context_ids"], rec["question_ids"] = seen["context_ids"], seen["question_ids"][0]
                rec["n_context"], rec["n_question"] = len(rec["context_ids"]), len(rec["question_ids"])
            assert seen["context_ids"] == rec["context_ids"] and seen["question_ids"][0] == rec["question_ids"]
            assert len(seen["answers"]) == 1
            run = {"press": mkf.cfg_of(press) if press is not None else None,
                   "answer": res["answer"], "answer_ids": seen["answers"][0]}
            if press is not None:
                run["layers"] = cap.layers()
                assert len(run["layers"]) == model.config.num_hidden_layers
            rec["runs"][pname] = run
            print(f"[{s['name']}] {pname}: {len(rec['context_ids'])}+{len(rec['question_ids'])} tokens, "
                  f"{time.time() - t:.1f}s: {res['answer']!r}", flush=True)
        out_samples.append(rec)

    c = model.config
    eos = model.generation_config.eos_token_id
    fx = {
        "format": "kvsqueeze-kvpress-pipeline-v1",
        "model": {"file": "~/.cache/kvsqueeze/models/" + MODEL_FILE, "sha256": mlf.sha256_file(path),
                  "hf_class": type(model).__name__, "num_hidden_layers": c.num_hidden_layers,
                  "num_attention_heads": c.num_attention_heads, "num_key_value_heads": c.num_key_value_heads,
                  "head_dim": getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads},
        "reference": {"versions": mkf.versions(), "attn_implementation": "sdpa", "dtype": "float32", "device": "cpu",
                      "threads": 1, "seed": SEED, "torch_manual_seed_before_each_call": SEED,
                      "pipeline": "transformers.pipeline('kv-press-text-generation', model=model, tokenizer=tok)"
                                  "(context, question=..., answer_prefix=..., press=..., max_new_tokens=...)",
                      "cache": "DynamicCache() made by the pipeline",
                      "shims": ["cache_position pre-hook (transformers 5.23 no longer passes it)"],
                      "recording": ["preprocess() output (context_ids, questions_ids) wrapped and recorded",
                                    "tokenizer.decode() wrapped: the generated ids as the pipeline decodes them",
                                    "press.compress() wrapped: kept rows matched against the full cache per head",
                                    "press.score() wrapped: scores near each cut"]},
        "compression_ratio": RATIO, "max_new_tokens": MAX_NEW_TOKENS, "eos_token_ids": eos if isinstance(eos, list) else [eos],
        "kept_encoding": "kept_hex[head]: hex digit d holds positions 4d..4d+3, bit j (value 1<<j) set iff position 4d+j is kept",
        "near_cut_encoding": f"per head: the {NEAR_CUT} lowest-scored kept and {NEAR_CUT} highest-scored evicted slots "
                             f"and, when the highest evicted score is within {BAND_REL:g} (relative) of the lowest kept "
                             "score, every slot within that band, "
                             "[position, kvpress score] (scores to 9 significant digits)",
        "samples": out_samples,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(fx, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.relpath(args.out, REPO)} ({os.path.getsize(args.out) / 1e6:.2f} MB) in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
