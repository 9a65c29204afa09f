#!/usr/bin/env python3
"""GPU anchor: prefill and decode speed of PyTorch/transformers with NVIDIA kvpress presses.

The numbers kvsqueeze's GPU path is compared with. No download: the model is built from a config
with random weights (speed does not depend on the weights), and the token ids are random (fixed seed).

For each context length and compression ratio:
  1. prefill: the context goes through the model inside `with press(model):` into a DynamicCache,
     as kvpress's pipeline does it (`model.model(...)`: no LM head over the context); ratio 0 = no press;
  2. the question (16 tokens) is fed at its original positions (context length onwards, as in
     kvpress's pipeline), then --decode-tokens single-token greedy steps on the compressed cache;
     decode_tok_s counts those steps only (the question pass is question_s);
  3. kv_bytes_held: key + value bytes in the cache right after prefill (after compression);
  4. kvpress's own pipeline ("kv-press-text-generation") once, end to end (pipeline_s): tokenizing,
     pressed prefill, question, max_new_tokens = --decode-tokens (question pass + N-1 steps, each
     token read back for its EOS check, as kvpress does). It needs a tokenizer; with none offline, a
     word-level one is built in memory (word "t<i>" = id i), so the pipeline sees exactly the same
     ids (checked before timing). Real BPE tokenizing would cost a little more; next to a prefill,
     little. --no-pipeline skips it.

Run (GPU machine, with the carried wheels: see scripts/gpu/fetch_carry_wheels.sh):

  pip install --no-index --no-deps --target /tmp/site .gpu-carry/wheels/*.whl
  PYTHONPATH=/tmp/site python bench/gpu/bench_torch_anchor.py --shape llama3.1-8b \
      --contexts 4096,32768 --ratios 0,0.5,0.75 --press expected_attention --json out.json

CPU rehearsal: --device cpu --shape tiny --contexts 256,512 --ratios 0,0.5 --decode-tokens 8

Compatibility: kvpress 0.5.5 pins transformers<5.3. Its forward hook reads `cache_position` (no longer
passed to the attention modules since 5.3) and `past_key_values` (passed as `cache` in later 5.x);
adapt() fills both in (tests/reference/kvpress/README.md describes the first). kvpress imports
`datasets` at load, only for presses that fetch data from the hub; where it is not installed, a stub
takes its place. Each record lists the shims that ran under "shims".
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.metadata
import importlib.util
import inspect
import json
import sys
import time
import types
import warnings

import torch

QUESTION_TOKENS = 16
SEED = 1234
CACHE_KW = "past_key_values"
PRESSES = {"expected_attention": "ExpectedAttentionPress", "snapkv": "SnapKVPress", "knorm": "KnormPress"}

# Model shapes (published configs; weights are random).
SHAPES = {
    "qwen2.5-0.5b": ("Qwen2", dict(
        hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
        intermediate_size=4864, vocab_size=151936, rope_theta=1e6, tie_word_embeddings=True,
        max_position_embeddings=32768, rms_norm_eps=1e-6, bos_token_id=151643, eos_token_id=151645)),
    "llama3.1-8b": ("Llama", dict(
        hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=14336, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=False,
        max_position_embeddings=131072, rms_norm_eps=1e-5, bos_token_id=128000, eos_token_id=128009)),
    "tiny": ("Llama", dict(
        hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=512, vocab_size=4096, rope_theta=10000.0, tie_word_embeddings=False,
        max_position_embeddings=2048, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)),
}

SHIMS: set[str] = set()  # compatibility shims that actually ran


def import_kvpress():
    if importlib.util.find_spec("datasets") is None:
        # kvpress imports `datasets` at load for DuoAttention and the stats press only; neither runs here.
        stub = types.ModuleType("datasets")

        def load_dataset(*a, **k):
            raise RuntimeError("datasets is not installed (stub for kvpress's import)")
        stub.load_dataset = load_dataset
        sys.modules["datasets"] = stub
        SHIMS.add("datasets stub")
    import kvpress
    return kvpress


def adapt(press):
    """kvpress 0.5.5's forward hook reads kwargs["past_key_values"] and kwargs["cache_position"].
    transformers >= 5.3 passes no cache_position to the attention modules, and later 5.x passes the
    cache as "cache"; fill both in as transformers used to. The hook runs after the attention, so the
    cache already holds this call's tokens: cache_position = [seen - n, seen)."""
    if press is None:
        return None
    hook = press.forward_hook

    def forward_hook(module, args, kwargs, output):
        if "past_key_values" not in kwargs and "cache" in kwargs:
            kwargs = dict(kwargs, past_key_values=kwargs["cache"])
            SHIMS.add("past_key_values from cache")
        if "cache_position" not in kwargs:
            hs = kwargs["hidden_states"]
            seen = kwargs["past_key_values"].get_seq_length(module.layer_idx)
            kwargs = dict(kwargs, cache_position=torch.arange(seen - hs.shape[1], seen, device=hs.device))
            SHIMS.add("cache_position")
        return hook(module, args, kwargs, output)
    press.forward_hook = forward_hook  # an instance attribute: what `with press(model):` registers
    return press


def build_model(shape, device, dtype, max_len):
    import transformers as tf
    family, cfg = SHAPES[shape]
    cfg = dict(cfg, max_position_embeddings=max(cfg["max_position_embeddings"], max_len))
    config = getattr(tf, family + "Config")(**cfg)
    torch.manual_seed(SEED)
    with torch.device(device):  # initialise in place: an 8B model never goes through CPU memory
        model = getattr(tf, family + "ForCausalLM")._from_config(
            config, dtype=dtype, attn_implementation="sdpa")
    model.to(device).eval()
    # Random weights may hit EOS early; the pipeline must decode all its tokens like the manual loop.
    model.generation_config.eos_token_id = None
    return model


def kv_bytes(cache):
    return sum(l.keys.nbytes + l.values.nbytes for l in cache.layers)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_ids(n, vocab, seed, device, bos=None):
    ids = torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(seed))
    if bos is not None:  # a context starts with BOS, as the pipeline's does
        ids[0, 0] = bos
    return ids.to(device)


@torch.inference_mode()
def measure(model, press, ctx, question, n_decode, device):
    """One prefill (pressed) + question + n_decode greedy steps; returns the timings."""
    from transformers import DynamicCache
    cache = DynamicCache()
    n = ctx.shape[1]
    sync(device)
    t0 = time.perf_counter()
    with press(model) if press is not None else contextlib.nullcontext():
        model.model(input_ids=ctx, **{CACHE_KW: cache})
    sync(device)
    t1 = time.perf_counter()
    held, held_tokens = kv_bytes(cache), cache.get_seq_length()

    # Question at its original positions (n ...), then the greedy steps; ids stay on the device.
    q_pos = torch.arange(n, n + question.shape[1], device=device).unsqueeze(0)
    out = model(input_ids=question, position_ids=q_pos, logits_to_keep=1, **{CACHE_KW: cache})
    tok = out.logits[:, -1:].argmax(-1)
    sync(device)
    t2 = time.perf_counter()
    pos = torch.arange(n + question.shape[1], n + question.shape[1] + n_decode, device=device).unsqueeze(0)
    for i in range(n_decode):
        out = model(input_ids=tok, position_ids=pos[:, i:i + 1], **{CACHE_KW: cache})
        tok = out.logits[:, -1:].argmax(-1)
    sync(device)
    t3 = time.perf_counter()
    return dict(prefill_s=t1 - t0, prefill_tok_s=n / (t1 - t0), question_s=t2 - t1,
                decode_s=t3 - t2, decode_tok_s=n_decode / (t3 - t2),
                kv_bytes_held=held, kv_tokens_held=held_tokens)


def word_tokenizer(vocab_size, bos_id, max_len):
    """A word-level tokenizer: word "t<i>" is id i, "<s>" is BOS. Built in memory (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {f"t{i}": i for i in range(vocab_size) if i != bos_id}
    vocab["<s>"] = bos_id
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<s>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", model_max_length=max_len)


def make_pipeline(kvpress, model, tok):
    """kvpress's pipeline through the transformers factory, as its README shows it."""
    from transformers import pipeline
    try:
        return pipeline("kv-press-text-generation", model=model, tokenizer=tok)
    except Exception:  # older/newer factory quirks: the class itself is the same pipeline
        return kvpress.KVPressTextGenerationPipeline(model=model, tokenizer=tok)


def time_pipeline(pipe, press, ctx, question, n_decode, device):
    """kvpress's pipeline end to end (tokenize, pressed prefill, question, greedy answer)."""
    # The pipeline prepends BOS itself and appends "\n" to the question (dropped by this tokenizer).
    context = " ".join(f"t{i}" for i in ctx[0, 1:].tolist())
    q_text = " ".join(f"t{i}" for i in question[0].tolist())
    ids = pipe.preprocess(context, questions=[q_text], answer_prefix="", max_context_length=10**9)
    if not (torch.equal(ids["context_ids"].cpu(), ctx.cpu()) and torch.equal(ids["questions_ids"][0].cpu(),
                                                                              question.cpu())):
        return dict(pipeline="skipped: the in-memory tokenizer did not reproduce the ids")
    sync(device)
    t0 = time.perf_counter()
    pipe(context, question=q_text, press=press, max_new_tokens=n_decode)
    sync(device)
    return dict(pipeline="ran (in-memory word-level tokenizer)", pipeline_s=time.perf_counter() - t0)


def guarded(oom_error, fn, *args):
    """fn(*args), or None when it runs out of memory (then the memory is given back, and the run goes on)."""
    try:
        return fn(*args)
    except oom_error:
        pass
    # Outside the except block: the failed call's frames, and so its tensors, are released by now.
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--contexts", default="4096,32768", help="context lengths in tokens, comma-separated")
    ap.add_argument("--ratios", default="0,0.5,0.75", help="compression ratios (fraction evicted); 0 = no press")
    ap.add_argument("--press", choices=sorted(PRESSES), default="expected_attention")
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--no-pipeline", action="store_true", help="skip timing kvpress's own pipeline")
    ap.add_argument("--json", metavar="OUT", help="also write the list of records to this file")
    args = ap.parse_args()
    # kvpress's pipeline still passes past_key_values=; the rename warning is noise here.
    warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated", category=FutureWarning)

    contexts = [int(x) for x in args.contexts.split(",")]
    ratios = [float(x) for x in args.ratios.split(",")]
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    kvpress = import_kvpress()
    oom_error = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

    max_len = max(contexts) + QUESTION_TOKENS + args.decode_tokens + 1
    model = build_model(args.shape, device, dtype, max_len)
    global CACHE_KW  # later transformers 5.x renamed past_key_values to cache
    CACHE_KW = "cache" if "cache" in inspect.signature(model.model.forward).parameters else "past_key_values"
    cfg = model.config
    base = {"engine": "torch+kvpress", "kvpress_version": importlib.metadata.version("kvpress"),
            "torch": torch.__version__, "transformers": importlib.metadata.version("transformers"),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "dtype": str(dtype).replace("torch.", ""), "shape": args.shape, "press": args.press}

    def make_press(ratio):
        return adapt(getattr(kvpress, PRESSES[args.press])(compression_ratio=ratio)) if ratio > 0 else None

    question = random_ids(QUESTION_TOKENS, cfg.vocab_size, SEED + 1, device)

    pipe, pipe_skip = None, "skipped: --no-pipeline"
    if not args.no_pipeline:
        try:
            tok = word_tokenizer(cfg.vocab_size, cfg.bos_token_id, max_len)
        except ImportError as e:  # no `tokenizers` to build one with: say so, do not fake it
            pipe_skip = f"skipped: needs a tokenizer ({e})"
        else:
            pipe = make_pipeline(kvpress, model, tok)

    # Warm-up (kernels, allocator, press code paths, the pipeline) on a short context, not reported.
    warm = random_ids(min(512, min(contexts)), cfg.vocab_size, SEED, device, cfg.bos_token_id)
    for ratio in ratios:
        measure(model, make_press(ratio), warm, question, min(4, args.decode_tokens), device)
        if pipe is not None:
            time_pipeline(pipe, make_press(ratio), warm, question, min(4, args.decode_tokens), device)

    records = []
    for n in contexts:
        ctx = random_ids(n, cfg.vocab_size, SEED + n, device, cfg.bos_token_id)
        for ratio in ratios:
            rec = dict(base, context=n, ratio=ratio, question_tokens=QUESTION_TOKENS,
                       decode_tokens=args.decode_tokens)
            if ratio > 0:  # the press's own parameters (kvpress defaults), for the record
                rec["press_config"] = dataclasses.asdict(make_press(ratio))
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            res = guarded(oom_error, measure, model, make_press(ratio), ctx, question, args.decode_tokens, device)
            if res is None:
                rec["error"] = "out of memory"
            else:
                rec.update(res)
                if device.type == "cuda":
                    rec["peak_mem_bytes"] = torch.cuda.max_memory_allocated(device)
            if pipe is None:
                rec["pipeline"] = pipe_skip
            elif res is None:
                rec["pipeline"] = "skipped: out of memory in the manual run"
            else:
                res = guarded(oom_error, time_pipeline, pipe, make_press(ratio), ctx, question,
                              args.decode_tokens, device)
                rec.update(res if res is not None else {"pipeline": "error: out of memory"})
            rec["shims"] = sorted(SHIMS)
            records.append(rec)
            print(json.dumps(rec), flush=True)

    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
