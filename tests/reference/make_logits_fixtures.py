#!/usr/bin/env python3
"""HF-transformers reference logits for kvsqueeze, written as small JSON fixtures.

Each model is loaded with transformers straight from its GGUF file (float32, eager attention,
CPU), fed fixed token-id prompts, and for each stored position the fixture keeps: argmax id,
top-16 (id, logit), the logits at 32 fixed pseudo-random "probe" ids, and max |logit|.
Synthetic models are first regenerated with scripts/synth/make_synthetic_gguf.py, and the
fixture records the exact generator command and the sha256 of the file it produced.

  /tmp/refenv/bin/python tests/reference/make_logits_fixtures.py            # all fixtures
  /tmp/refenv/bin/python tests/reference/make_logits_fixtures.py --only stories260k synth_llama_f32
  /tmp/refenv/bin/python tests/reference/make_logits_fixtures.py --only qwen25_05b_instruct_q4km qwen25_15b_instruct_q4km
  /tmp/refenv/bin/python tests/reference/make_logits_fixtures.py --list

See tests/reference/README.md for what HF does differently from llama.cpp.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
GEN = "scripts/synth/make_synthetic_gguf.py"
OUT_DIR = os.path.join(REPO, "tests", "fixtures", "logits")
STORIES = os.path.abspath(os.path.join(REPO, "..", "shared", "models", "stories260K.gguf"))
GEMMA = os.path.expanduser("~/.cache/kvsqueeze/models/gemma-3-270m-q4_k_m.gguf")
# The Qwen2.5-Coder instruct models (scripts/get_model.sh qwen2.5-0.5b-instruct / qwen2.5-1.5b-instruct).
QWEN_MODELS = {
    "qwen25_05b_instruct_q4km": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "qwen25_15b_instruct_q4km": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
}

TOP_K = 16
N_PROBE = 32
PROBE_SEED = 20250101
PROMPT_SEED = 7
SYNTH_SEED = 1
SYNTH_PROMPT_LEN = 24
LOGIT_DIGITS = 7  # significant digits stored (float32 has ~7.2)

STORIES_PROMPTS = [
    ("once", "Once upon a time"),
    ("lily", "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
             "park with her friends. One day, she saw a big red ball under a tree. She ran to get it, "
             "but a small dog took it first. Lily was sad, so her mom said"),
    ("ben", "Ben had a toy car. He liked to"),
]

GEMMA_PROMPTS = [
    ("capital", "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is"),
    ("story", "Write a short story about a robot who learns to paint. Once upon a time, in a small town "
              "by the sea, there lived a robot named"),
]

# Qwen: a plain-text prompt, a code prompt, and an instruction rendered with the model's own chat
# template (tokenizer.chat_template from the GGUF, as HF's apply_chat_template renders it; no system
# message, so the template's default system prompt is part of it). Each at most 64 tokens.
QWEN_PROMPTS = [
    ("capital", GEMMA_PROMPTS[0][1]),
    ("code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n"),
]
QWEN_CHAT = [{"role": "user", "content": "Write a Python function that checks whether a number is prime."}]
QWEN_MAX_PROMPT_TOKENS = 64
QWEN_GREEDY_TOKENS = 32

LONG_TEXT = " ".join([
    "The history of the lighthouse at the northern end of the bay begins in the early nineteenth century,",
    "when a series of shipwrecks convinced the harbour council that the rocks beneath the cliffs needed a",
    "permanent light. The first tower was built of local granite and stood only twelve metres tall. Its",
    "lamp burned whale oil, and the keeper, a retired sailor named Thomas Hale, climbed the narrow stairs",
    "every evening to trim the wick and polish the reflectors. In winter the wind drove salt spray over",
    "the gallery, and the glass had to be cleaned several times each night. Hale kept a careful log of",
    "every ship that passed, the weather, the state of the sea, and the amount of oil he used. His notes",
    "survive in the town archive and give a vivid picture of life on the coast two hundred years ago.",
    "In 1852 the old tower was replaced by a taller one made of brick, with a rotating lens imported from",
    "France. The new light could be seen from thirty kilometres away on a clear night. A small cottage",
    "was added for the keeper's family, along with a vegetable garden, a well, and a shed for goats. The",
    "children walked three kilometres to the village school along a path that followed the cliff edge.",
    "During storms they stayed at home and their mother taught them arithmetic, geography, and the names",
    "of the stars. Later in the century the oil lamp gave way to paraffin, and then, in 1921, to an",
    "electric bulb powered by a diesel generator. The keepers were gradually replaced by automatic",
    "machinery, and the last of them left in 1968. For many years the cottage stood empty. Its windows",
    "were broken by the wind and its garden was overgrown with gorse and bramble. Then a group of",
    "volunteers formed a trust to restore the buildings. They raised money through concerts, raffles,",
    "and a long sponsored walk around the whole coastline of the county. The restoration took eleven",
    "years. Today the cottage is a small museum with Hale's logbooks, a model of the first tower, old",
    "photographs of the keepers and their families, and a room where children can try on oilskins and",
    "sou'westers. Visitors can climb the tower on summer afternoons and look out over the bay, where",
    "seals bask on the rocks and gannets dive for fish. The light itself still works, although it is now",
    "an array of light emitting diodes that uses less power than a kettle. Every year, on the night of",
    "the winter solstice, the trust holds a ceremony in memory of the sailors who were lost on the rocks",
    "before the first light was built. Candles are placed along the path from the village, and the names",
    "of the ships are read aloud: the Mary Ellen, the Good Intent, the Swift, the Brothers, and the",
    "Northern Star. Afterwards there is soup and bread in the village hall, and the oldest member of the",
    "trust tells the story of the night in 1839 when Thomas Hale rowed out alone in a gale to rescue",
    "four fishermen whose boat had struck the reef. He was awarded a silver medal by the lifeboat",
    "institution, and the medal is now displayed in a glass case beside his logbooks. Scientists have",
    "also found the logbooks useful. Because Hale recorded the weather so carefully, his notes have been",
    "used to reconstruct the climate of the region in the decades before official measurements began.",
    "They show that winters were colder and storms more frequent than today, and that the sea froze in",
    "the harbour at least twice. A university team is now transcribing all forty volumes so that they can",
    "be searched online. The volunteers hope that the museum will continue to attract visitors for many",
    "years to come, and that the story of the lighthouse and its keepers will not be forgotten.",
])


# ---------------------------------------------------------------------------------------------
def synth_generator():
    """scripts/synth/make_synthetic_gguf.py as a module: its vocabularies, shapes and file hash."""
    sys.path.insert(0, os.path.join(REPO, "scripts", "synth"))
    import make_synthetic_gguf
    return make_synthetic_gguf


def sha256_file(path: str) -> str:
    return synth_generator().sha256_file(path)


def versions() -> dict:
    import gguf  # noqa: F401
    import importlib.metadata as md
    import torch
    import transformers
    return {"transformers": transformers.__version__, "torch": torch.__version__,
            "gguf": md.version("gguf"), "numpy": np.__version__, "python": sys.version.split()[0]}


def probe_ids(n_vocab: int) -> list[int]:
    rng = np.random.Generator(np.random.PCG64(PROBE_SEED))
    return sorted(int(x) for x in rng.choice(n_vocab, size=N_PROBE, replace=False))


def rnd(x: float) -> float:
    return float(f"{x:.{LOGIT_DIGITS}g}")


def synth_command(arch: str, ftype: str, seed: int = SYNTH_SEED, shape: str = "tiny") -> list[str]:
    return ["python3", GEN, "--arch", arch, "--shape", shape, "--type", ftype, "--seed", str(seed),
            "-o", "{out}"]


def generate_synth(cmd: list[str], out: str) -> None:
    argv = [sys.executable if a == "python3" else a for a in cmd]
    argv = [out if a == "{out}" else a for a in argv]
    subprocess.run(argv + ["--quiet"], check=True, cwd=REPO)


def metadata_only_copy(src: str, dst: str, drop=()) -> None:
    """Copy a GGUF's metadata (no tensors), minus some keys. Used to work around HF's tokenizer loader
    rejecting stories260K's padding/separator id 0xFFFFFFFF (= "none" for llama.cpp)."""
    import gguf
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture" or k in drop:
            continue
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(k, f.contents(), vt, sub_type=f.types[-1])
        else:
            w.add_key_value(k, f.contents(), vt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def n_context_tokens(tok, context: str) -> int:
    """Tokens of `context` as kvpress's pipeline builds it: the chat template, cut before the question."""
    sep = "#" * (len(context) + 10)
    text = tok.apply_chat_template([{"role": "user", "content": context + sep}], add_generation_prompt=True,
                                   tokenize=False)
    return len(tok.encode(text.split(sep)[0], add_special_tokens=False))


def load_tokenizer(path: str):
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    except Exception:
        tmp = tempfile.mkdtemp()
        dst = os.path.join(tmp, "meta.gguf")
        metadata_only_copy(path, dst, drop=("tokenizer.ggml.padding_token_id",
                                            "tokenizer.ggml.seperator_token_id"))
        return AutoTokenizer.from_pretrained(tmp, gguf_file="meta.gguf")


def _patch_hf_mistral_gguf() -> None:
    """HF bug workaround: for a 'llama' GGUF whose general.name is 'mistral', transformers builds a
    MistralForCausalLM but then looks up gguf-py's tensor-name map under model_type 'mistral', which
    gguf-py does not have ("Unknown gguf model_type: mistral in gguf-py"). The tensor names are the
    llama ones, so map the lookup to 'llama'. Nothing else is changed."""
    import transformers.modeling_gguf_pytorch_utils as mg
    if getattr(mg, "_kvsqueeze_patched", False):
        return
    orig = mg.get_gguf_hf_weights_map

    def patched(hf_model, processor, model_type=None, num_layers=None, qual_name=""):
        if model_type is None and hf_model.config.model_type == "mistral":
            model_type = "llama"
        return orig(hf_model, processor, model_type, num_layers, qual_name)

    mg.get_gguf_hf_weights_map = patched
    mg._kvsqueeze_patched = True


def load_model(path: str, overrides: dict):
    import torch
    from transformers import AutoModelForCausalLM
    _patch_hf_mistral_gguf()
    kw = dict(overrides)
    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                             dtype=torch.float32, attn_implementation="eager", **kw)
    m.eval()
    return m


def config_summary(m) -> dict:
    c = m.config
    keys = ["model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "vocab_size", "rms_norm_eps", "rope_parameters",
            "tie_word_embeddings", "sliding_window", "layer_types", "query_pre_attn_scalar",
            "final_logit_softcapping", "attn_logit_softcapping", "hidden_act", "hidden_activation",
            "attention_bias", "use_sliding_window", "max_position_embeddings"]
    out = {"class": type(m).__name__}
    for k in keys:
        if hasattr(c, k):
            v = getattr(c, k)
            if k == "layer_types" and v is not None:
                v = list(v)
            out[k] = v
    return json.loads(json.dumps(out, default=str))


def run_logits(m, ids: list[int]) -> np.ndarray:
    import torch
    with torch.no_grad():
        out = m(torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0].float().numpy()


def check_sane(name: str, logits: np.ndarray) -> None:
    if not np.isfinite(logits).all():
        raise SystemExit(f"{name}: non-finite logits")
    spread = logits.std(axis=-1)
    if (spread < 1e-3).any():
        raise SystemExit(f"{name}: logits (nearly) constant at some position: min std {spread.min()}")


def position_records(logits: np.ndarray, positions: list[int], probes: list[int]) -> list[dict]:
    recs = []
    for p in positions:
        row = logits[p]
        top = np.argsort(-row, kind="stable")[:TOP_K]
        recs.append({
            "pos": int(p),
            "argmax": int(top[0]),
            "top_ids": [int(i) for i in top],
            "top_logits": [rnd(row[i]) for i in top],
            "probe_logits": [rnd(row[i]) for i in probes],
            "max_abs_logit": rnd(float(np.abs(row).max())),
        })
    return recs


def prompt_entry(m, name, ids, probes, text=None, positions=None, fixture="", tok=None):
    logits = run_logits(m, ids)
    check_sane(f"{fixture}/{name}", logits)
    if positions is None:
        positions = list(range(len(ids)))
    e = {"name": name}
    if text is not None:
        e["text"] = text
    e["n_tokens"] = len(ids)
    e["ids"] = [int(i) for i in ids]
    if tok is not None and len(ids) <= 100:
        e["tokens"] = tok.convert_ids_to_tokens(list(ids))
    e["positions_stored"] = "all" if len(positions) == len(ids) else positions
    e["logit_std_over_vocab_min"] = rnd(float(logits.std(axis=-1).min()))
    e["per_position"] = position_records(logits, positions, probes)
    return e


def write_fixture(name: str, fx: dict) -> None:
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, name + ".json")
    with open(path, "w") as f:
        json.dump(fx, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(path, REPO)} ({os.path.getsize(path)} bytes)", flush=True)


def write_greedy_fixture(name, desc, m, tok, overrides, notes, vers, text, ids, n_new, extra=None, **generate_args):
    """HF's greedy continuation of `ids` (exactly n_new tokens: EOS suppressed) as fixture `name`;
    `extra` entries come before the prompt's."""
    import torch
    with torch.no_grad():
        out = m.generate(torch.tensor([ids]), max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, num_beams=1,
                         **generate_args)
    gen = [int(i) for i in out[0][len(ids):]]
    fxg = base_fixture(name, desc, m, overrides, notes, vers)
    fxg.update(extra or {})
    fxg["prompt_text"] = text
    fxg["prompt_ids"] = [int(i) for i in ids]
    fxg["new_tokens"] = n_new
    fxg["generated_ids"] = gen
    fxg["generated_text"] = tok.decode(gen)
    write_fixture(name, fxg)


def load_real(path, file, overrides):
    """A real GGUF's tokenizer, HF model, probe ids and fixture description (`file`: as recorded)."""
    tok = load_tokenizer(path)
    m = load_model(path, overrides)
    probes = probe_ids(m.config.vocab_size)
    return tok, m, probes, {"kind": "real", "file": file, "sha256": sha256_file(path), "size": os.path.getsize(path)}


def prompts_fixture(name, desc, m, overrides, notes, vers, probes):
    """base_fixture with the probe ids and an empty prompt list to fill."""
    fx = base_fixture(name, desc, m, overrides, notes, vers)
    fx["probe_ids"] = probes
    fx["prompts"] = []
    return fx


def base_fixture(name, model_desc, m, overrides, notes, vers):
    return {
        "fixture": name,
        "format": "kvsqueeze-logits-v1",
        "model": model_desc,
        "reference": {
            "library": "transformers (GGUF loader, weights dequantized by gguf-py to float32)",
            "versions": vers,
            "load": "AutoModelForCausalLM.from_pretrained(dir, gguf_file=file, dtype=torch.float32, "
                    "attn_implementation='eager', **config_overrides); CPU; one full-prompt forward, "
                    "no KV cache",
            "config_overrides": overrides,
            "hf_config": config_summary(m),
            "notes": notes,
        },
        "regenerate": "/tmp/refenv/bin/python tests/reference/make_logits_fixtures.py --only " + name,
        "top_k": TOP_K,
        "logit_digits": LOGIT_DIGITS,
    }


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------
STORIES_NOTES = [
    "Real pretrained weights (llama2.c stories260K), all F32; GGUF has no rope.freq_base -> 10000 in both.",
    "pad/separator ids are 0xFFFFFFFF in the file; HF is given pad_token_id=None (only affects nn.Embedding "
    "init, weights are loaded afterwards) and its tokenizer is read from a metadata-only copy without them.",
    "Prompt ids come from HF's GGUF SentencePiece tokenizer (BOS prepended, add_bos default for 'llama').",
]


def fx_stories(vers):
    tok, m, probes, desc = load_real(STORIES, "../shared/models/stories260K.gguf", {"pad_token_id": None})
    fx = prompts_fixture("stories260k", desc, m, {"pad_token_id": None}, STORIES_NOTES, vers, probes)
    for pname, text in STORIES_PROMPTS:
        ids = tok(text).input_ids
        fx["prompts"].append(prompt_entry(m, pname, ids, probes, text=text, fixture="stories260k", tok=tok))
    write_fixture("stories260k", fx)

    # greedy continuation
    text = "Once upon a time"
    write_greedy_fixture("stories260k_greedy", desc, m, tok, {"pad_token_id": None}, STORIES_NOTES + [
        "HF generate(do_sample=False, num_beams=1, max_new_tokens=64, min_new_tokens=64): EOS is suppressed "
        "(min_new_tokens), so exactly 64 new tokens; uses HF's KV cache (DynamicCache)."], vers,
        text, tok(text).input_ids, 64, pad_token_id=m.config.eos_token_id)


GEMMA_NOTES = [
    "Real Gemma 3 270M, Q4_K_M GGUF (tensor types Q8_0 token_embd, Q5_0, Q4_K, Q6_K, F32 norms); HF "
    "dequantizes with gguf-py and runs float32.",
    "Prompt ids from HF's GGUF Gemma tokenizer, BOS (2) prepended (tokenizer.ggml.add_bos_token = true).",
    "HF config: query_pre_attn_scalar 256 (= head_dim, so scale 1/16 as llama.cpp), sliding_window 512, "
    "layer il sliding iff (il+1) % 6 != 0, rope theta 1e6 global / 10000 sliding, no softcapping, "
    "gelu_pytorch_tanh, embeddings * sqrt(640) (float32 25.298222).",
    "Long prompt: only every 25th position and the last 10 are stored.",
]


def fx_gemma(vers):
    if not os.path.exists(GEMMA):
        print(f"skip gemma: {GEMMA} missing")
        return
    tok, m, probes, desc = load_real(GEMMA, "~/.cache/kvsqueeze/models/gemma-3-270m-q4_k_m.gguf", {})
    fx = prompts_fixture("gemma3_270m_q4km", desc, m, {}, GEMMA_NOTES, vers, probes)
    for pname, text in GEMMA_PROMPTS:
        ids = tok(text).input_ids
        fx["prompts"].append(prompt_entry(m, pname, ids, probes, text=text, fixture="gemma", tok=tok))
    ids = tok(LONG_TEXT).input_ids
    n = len(ids)
    pos = sorted(set(list(range(0, n, 25)) + list(range(n - 10, n))))
    fx["prompts"].append(prompt_entry(m, "long_lighthouse", ids, probes, text=LONG_TEXT, positions=pos,
                                      fixture="gemma"))
    write_fixture("gemma3_270m_q4km", fx)

    # greedy continuation of the first prompt
    text = GEMMA_PROMPTS[1][1]
    write_greedy_fixture("gemma3_270m_q4km_greedy", desc, m, tok, {}, GEMMA_NOTES[:3] + [
        "HF generate(do_sample=False, num_beams=1, max_new_tokens=32, min_new_tokens=32); HF KV cache."], vers,
        text, tok(text).input_ids, 32)


QWEN_NOTES = [
    "Real Qwen2.5-Coder-Instruct, Q4_K_M GGUF; HF dequantizes every tensor with gguf-py and runs float32.",
    "Prompt ids from HF's GGUF Qwen2 tokenizer (byte-level BPE, pre qwen2); no BOS "
    "(tokenizer.ggml.add_bos_token = false).",
    "The 'chat' prompt is tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) with "
    "the GGUF's own tokenizer.chat_template, tokenized with add_special_tokens=False (== the ids of "
    "apply_chat_template(tokenize=True), checked); the messages are in the prompt's 'messages'. With no system "
    "message the template inserts its default one (\"You are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.\").",
    "HF config: qwen2, head_dim = hidden/heads = 64 (0.5B) or 128 (1.5B), q/k/v biases, rope theta 1e6 (neox), "
    "rms eps 1e-6, no sliding window; separate output.weight in both files.",
]


def gguf_tensor_note(path: str) -> str:
    import collections
    import gguf
    r = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type.name for t in r.tensors}
    counts = collections.Counter(types.values())
    return (f"general.name {r.fields['general.name'].contents()!r}; tensor types "
            + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
            + f"; token_embd {types.get('token_embd.weight')}, output {types.get('output.weight', 'tied')}.")


def qwen_chat_prompt(tok):
    text = tok.apply_chat_template(QWEN_CHAT, add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=False).input_ids
    direct = tok.apply_chat_template(QWEN_CHAT, add_generation_prompt=True, tokenize=True)
    direct = direct["input_ids"] if hasattr(direct, "keys") else direct
    if list(direct) != list(ids):
        raise SystemExit(f"apply_chat_template ids {list(direct)} != encode(rendered) {ids}")
    return text, ids


def fx_qwen(name, vers):
    file = QWEN_MODELS[name]
    path = os.path.expanduser("~/.cache/kvsqueeze/models/" + file)
    if not os.path.exists(path):
        print(f"skip {name}: {path} missing")
        return
    tok, m, probes, desc = load_real(path, "~/.cache/kvsqueeze/models/" + file, {})
    notes = QWEN_NOTES + [gguf_tensor_note(path)]
    fx = prompts_fixture(name, desc, m, {}, notes, vers, probes)
    prompts = [(pname, text, tok(text).input_ids, None) for pname, text in QWEN_PROMPTS]
    chat_text, chat_ids = qwen_chat_prompt(tok)
    prompts.append(("chat", chat_text, chat_ids, QWEN_CHAT))
    for pname, text, ids, messages in prompts:
        if len(ids) > QWEN_MAX_PROMPT_TOKENS:
            raise SystemExit(f"{name}/{pname}: {len(ids)} tokens > {QWEN_MAX_PROMPT_TOKENS}")
        e = prompt_entry(m, pname, ids, probes, text=text, fixture=name, tok=tok)
        if messages is not None:
            e = {"name": e.pop("name"), "messages": messages, "add_generation_prompt": True, **e}
        fx["prompts"].append(e)
    write_fixture(name, fx)

    # greedy continuation of the chat prompt
    import torch
    n_new = QWEN_GREEDY_TOKENS
    write_greedy_fixture(name + "_greedy", desc, m, tok, {}, notes + [
        f"HF generate(do_sample=False, num_beams=1, max_new_tokens={n_new}, min_new_tokens={n_new}) from the chat "
        "prompt: EOS suppressed, HF KV cache."], vers, chat_text, chat_ids, n_new, extra={"prompt_messages": QWEN_CHAT},
        attention_mask=torch.ones(1, len(chat_ids), dtype=torch.long), pad_token_id=tok.pad_token_id)


SYNTH_NOTES = {
    "llama": ["llama.cpp arch 'llama'; Q/K stored permuted (llama.cpp layout, RoPE 'normal' = adjacent "
              "pairs); HF un-permutes and uses rotate_half: identical math."],
    "mistral": ["HF needed a workaround (see _patch_hf_mistral_gguf: gguf-py has no 'mistral' tensor map). "
                "GGUF arch 'llama' with general.name 'mistral' -> HF MistralForCausalLM (sliding_window "
                "4096 from MistralConfig's default, irrelevant for 24 tokens; llama.cpp applies no SWA to "
                "arch 'llama'). Math otherwise identical to llama."],
    "qwen2": ["RoPE neox (rotate_half) in both; q/k/v biases; tied embeddings (no output.weight). HF "
              "head_dim = hidden/heads (qwen2 mapping ignores key_length)."],
    "qwen3": ["RoPE neox; per-head q_norm/k_norm (RMSNorm over head_dim, before RoPE); head_dim 128 "
              "(HF's qwen3 GGUF mapping does not read attention.key_length; Qwen3Config default 128)."],
    "gemma3": ["6 layers, sliding_window 8: layers 0-4 sliding (rope base 10000), layer 5 global "
               "(rope.freq_base 1e6); both llama.cpp and HF: layer il is sliding iff il % 6 != 5.",
               "config override query_pre_attn_scalar = head_dim (32): llama.cpp gemma3 (non-27B) scales "
               "q by 1/sqrt(head_dim) and reads nothing from the GGUF for it; HF's GGUF mapping does not "
               "set query_pre_attn_scalar and its default is 256.",
               "norms stored as (1 + w) (llama.cpp multiplier); HF subtracts 1 on load and multiplies by "
               "(1 + w): identical. Embeddings scaled by sqrt(128) in both."],
}


def synth_prompt(vocab_kind: str, n_vocab: int, n: int, seed: int) -> list[int]:
    rng = np.random.Generator(np.random.PCG64(seed))
    if vocab_kind == "spm":  # stories vocab: 0 unk, 1 bos, 2 eos, 3..258 bytes, 259.. pieces
        return [1] + [int(x) for x in rng.integers(259, n_vocab, size=n - 1)]
    # synthetic BPE: 0..n_regular-1 byte tokens and merges; no BOS (qwen add_bos_token = false)
    n_regular = synth_generator().synth_bpe_vocab(n_vocab)["n_regular"]
    return [int(x) for x in rng.integers(0, n_regular, size=n)]


def fx_synth(arch: str, ftype: str, vers, synth_dir: str):
    name = f"synth_{arch}_{ftype.lower()}"
    cmd = synth_command(arch, ftype)
    path = os.path.join(synth_dir, f"{arch}-tiny-{ftype}-s{SYNTH_SEED}.gguf")
    generate_synth(cmd, path)
    overrides = {}
    if arch == "gemma3":
        overrides["query_pre_attn_scalar"] = synth_generator().TINY["gemma3"]["head_dim"]
    m = load_model(path, overrides)
    n_vocab = m.config.vocab_size
    probes = probe_ids(n_vocab)
    desc = {
        "kind": "synthetic",
        "file": os.path.basename(path),
        "generator": {
            "command": " ".join(cmd),
            "argv": cmd,
            "note": "run from the repository root; '{out}' is the output path; needs only numpy + gguf "
                    f"(gguf {vers['gguf']} used here); the tiny llama/mistral/gemma3 models read the "
                    "vocabulary from ../shared/models/stories260K.gguf",
            "arch": arch, "shape": "tiny", "type": ftype, "seed": SYNTH_SEED,
        },
        "sha256": sha256_file(path),
        "size": os.path.getsize(path),
    }
    notes = list(SYNTH_NOTES[arch])
    if ftype != "F32":
        notes.append(f"All 2-D weights (incl. token_embd and output) are {ftype}; norms/biases F32. "
                     + ("K-quant blocks are random bytes with sane fp16 scales (not quantized from floats)."
                        if ftype.endswith("_K") else
                        "Quantized with gguf-py from the same float weights as the F32 model."))
    fx = base_fixture(name, desc, m, overrides, notes, vers)
    fx["probe_ids"] = probes
    vkind = "spm" if arch in ("llama", "mistral", "gemma3") else "bpe"
    ids = synth_prompt(vkind, n_vocab, SYNTH_PROMPT_LEN, PROMPT_SEED)
    fx["prompts"] = [prompt_entry(m, "random24", ids, probes, fixture=name)]
    write_fixture(name, fx)


ALL_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]


def all_fixtures():
    fx = {"stories260k": ("stories", None), "gemma3_270m_q4km": ("gemma", None)}
    for name in QWEN_MODELS:
        fx[name] = ("qwen", name)
    for arch in ["llama", "mistral", "qwen2", "qwen3", "gemma3"]:
        fx[f"synth_{arch}_f32"] = ("synth", (arch, "F32"))
    for t in ALL_TYPES[1:]:
        fx[f"synth_llama_{t.lower()}"] = ("synth", ("llama", t))
    return fx


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", help="fixture names (stories260k, gemma3_270m_q4km and the qwen25_* "
                                              "fixtures also write their NAME_greedy)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--synth-dir", default=os.path.join(tempfile.gettempdir(), "kvsqueeze-synth"))
    a = ap.parse_args()
    table = all_fixtures()
    if a.list:
        print("\n".join(table))
        return
    names = a.only or list(table)
    import torch
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    vers = versions()
    os.makedirs(a.synth_dir, exist_ok=True)
    for n in names:
        kind, arg = table[n]
        t0 = time.time()
        if kind == "stories":
            fx_stories(vers)
        elif kind == "gemma":
            fx_gemma(vers)
        elif kind == "qwen":
            fx_qwen(arg, vers)
        else:
            fx_synth(*arg, vers, a.synth_dir)
        print(f"  {n}: {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
