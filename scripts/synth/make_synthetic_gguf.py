#!/usr/bin/env python3
"""Deterministic random-weight GGUF v3 models for kvsqueeze tests and benchmarks.

Usage:
  make_synthetic_gguf.py --arch {llama,mistral,qwen2,qwen3,gemma3}
                         --shape {tiny,qwen2.5-0.5b,gemma3-270m,llama3.1-8b}
                         --type {F32,F16,BF16,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,Q4_K,Q5_K,Q6_K,mixed}
                         --seed N -o out.gguf

Needs only numpy and gguf-py (pip install numpy gguf); it never imports torch.
The output is a pure function of (arch, shape, type, seed, vocab file contents, gguf-py version):
running it twice gives byte-identical files. See tests/reference/README.md.

Design notes
- Metadata keys and tensor names are the ones llama.cpp's convert_hf_to_gguf.py writes for the
  architecture (general.architecture, {arch}.context_length, ...; token_embd.weight,
  blk.N.attn_q.weight, ..., output_norm.weight, output.weight).
- "mistral" is written the way llama.cpp writes (older) Mistral models: general.architecture =
  "llama" (llama.cpp has no "mistral" arch). general.name is set to "mistral" (exactly), which is
  what HF transformers' GGUF loader looks at to build a MistralForCausalLM instead of a Llama one.
- Q/K of llama/mistral are stored in llama.cpp's permuted ("normal" RoPE, adjacent pairs) layout;
  since weights are random this just means the GGUF tensor *is* the llama.cpp tensor; HF
  un-permutes on load.
- Norm weights are stored as the multiplier llama.cpp uses (for gemma3 this is 1 + w_hf, llama.cpp's
  converter adds the 1; HF subtracts it again on load). They are random around 1.
- Random numbers: a per-tensor numpy PCG64 stream seeded with (seed, crc32(tensor name)); only its
  raw bytes are used (Generator.bytes), turned into floats with exact integer/dyadic arithmetic
  (sum of two 16-bit uniforms: a triangular distribution), so no transcendental libm/SIMD
  function can make two machines disagree.
- Quantisation: Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/BF16 on the tiny shape use gguf-py's quantizer on the
  float weights; K-quants (which gguf-py cannot quantize) are written as random blocks with finite,
  sensibly scaled fp16 super-block scales, so the dequantised weights have the intended magnitude.
  The realistic shapes use random blocks for every quantized type (fast).
  As in llama.cpp, a K-quant requested for a tensor whose rows are not a multiple of 256 falls back
  to Q4_K->Q5_0, Q5_K->Q5_1, Q6_K->Q8_0.
- "mixed" = llama.cpp's Q4_K_M recipe: Q4_K by default, Q6_K for output.weight (or token_embd when
  the embeddings are tied) and for attn_v / ffn_down of the layers where use_more_bits() is true,
  with the fallbacks above where rows are not a multiple of 256. Norms and biases stay F32.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import zlib

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as QT
except ImportError:  # pragma: no cover
    sys.exit("make_synthetic_gguf.py needs gguf-py: pip install gguf numpy")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
# ../shared beside the repository, or KVSQ_SHARED_DIR (a GPU machine gets it carried elsewhere).
DEFAULT_SPM_VOCAB = os.path.join(os.environ.get("KVSQ_SHARED_DIR") or os.path.join(REPO, "..", "shared"), "models", "stories260K.gguf")

ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma3"]
SHAPES = ["tiny", "qwen2.5-0.5b", "gemma3-270m", "llama3.1-8b"]
TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K", "mixed"]
QK_K = 256

# llama.cpp llama_ftype values (general.file_type)
FILE_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9,
             "Q4_K": 14, "Q5_K": 16, "Q6_K": 18, "mixed": 15, "BF16": 32}

# ---------------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------------
# tiny: every row length a multiple of 256 where possible so every K-quant applies directly.
TINY = {
    # vocab "spm" = tokenizer of stories260K.gguf (512 tokens); "bpe" = synthetic byte-level BPE
    "llama":   dict(vocab="spm", n_embd=256, n_layer=2, n_head=8, n_head_kv=2, head_dim=32,
                    n_ff=256, n_ctx=2048, eps=1e-5, rope_base=10000.0, tied=False),
    "mistral": dict(vocab="spm", n_embd=256, n_layer=2, n_head=4, n_head_kv=2, head_dim=64,
                    n_ff=256, n_ctx=4096, eps=1e-5, rope_base=1000000.0, tied=False),
    "qwen2":   dict(vocab="bpe", n_embd=256, n_layer=2, n_head=4, n_head_kv=2, head_dim=64,
                    n_ff=256, n_ctx=4096, eps=1e-6, rope_base=1000000.0, tied=True),
    # HF's Qwen3 GGUF config mapping does not read attention.key_length and always uses its default
    # head_dim of 128 (like every real Qwen3), so the tiny qwen3 uses head_dim 128 (n_head*head_dim
    # = 512 != n_embd, which is worth testing anyway).
    "qwen3":   dict(vocab="bpe", n_embd=256, n_layer=2, n_head=4, n_head_kv=2, head_dim=128,
                    n_ff=256, n_ctx=4096, eps=1e-6, rope_base=1000000.0, tied=False),
    # 6 layers so that layer 5 is global (llama.cpp and HF: layer il is sliding iff il % 6 != 5);
    # sliding window 8 so that a 24-token prompt exercises it.
    "gemma3":  dict(vocab="spm", n_embd=128, n_layer=6, n_head=4, n_head_kv=2, head_dim=32,
                    n_ff=256, n_ctx=4096, eps=1e-6, rope_base=1000000.0, tied=True, swa=8),
}
REALISTIC = {
    "qwen2.5-0.5b": dict(vocab="bpe", n_vocab=151936, n_embd=896, n_layer=24, n_head=14, n_head_kv=2,
                         head_dim=64, n_ff=4864, n_ctx=32768, eps=1e-6, rope_base=1000000.0, tied=True),
    "gemma3-270m": dict(vocab="spm-synth", n_vocab=262144, n_embd=640, n_layer=18, n_head=4, n_head_kv=1,
                        head_dim=256, n_ff=2048, n_ctx=32768, eps=1e-6, rope_base=1000000.0, tied=True,
                        swa=512),
    # Llama 3.1 8B's shape (GPU benchmarks): GQA 32/8, head_dim 128, a 128K byte-level BPE vocabulary.
    "llama3.1-8b": dict(vocab="bpe", n_vocab=128256, n_embd=4096, n_layer=32, n_head=32, n_head_kv=8,
                        head_dim=128, n_ff=14336, n_ctx=131072, eps=1e-5, rope_base=500000.0, tied=False),
}


def get_shape(arch: str, shape: str) -> dict:
    if shape == "tiny":
        hp = dict(TINY[arch])
    else:
        hp = dict(REALISTIC[shape])
    if arch == "gemma3":
        hp["tied"] = True  # llama.cpp's gemma3 converter never writes output.weight
        hp.setdefault("swa", 512)
    return hp


# ---------------------------------------------------------------------------------------------
# deterministic random numbers
# ---------------------------------------------------------------------------------------------
def tensor_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(name.encode())])))


def rand_bytes(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.frombuffer(rng.bytes(n), dtype=np.uint8).copy()


def rand_tri(rng: np.random.Generator, n: int) -> np.ndarray:
    """n samples, mean 0 std 1 (triangular on [-sqrt6, sqrt6]), float64, exact arithmetic only."""
    u = np.frombuffer(rng.bytes(4 * n), dtype="<u2").astype(np.float64).reshape(n, 2)
    s = (u[:, 0] + u[:, 1] + 1.0) * (1.0 / 65536.0) - 1.0  # in (-1, 1), var = 1/6 (+tiny)
    return s * 2.449489742783178  # sqrt(6)


def rand_float(rng, shape, std: float, mean: float = 0.0) -> np.ndarray:
    n = int(np.prod(shape))
    out = np.empty(n, dtype=np.float32)
    chunk = 1 << 22
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        out[i:i + m] = (rand_tri(rng, m) * std + mean).astype(np.float32)
    return out.reshape(shape)


# ---------------------------------------------------------------------------------------------
# random quant blocks (valid data, sensibly scaled)
# ---------------------------------------------------------------------------------------------
BLOCK = {  # type: (elements per block, bytes per block)
    "Q8_0": (32, 34), "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24),
    "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210),
}


def f16_bytes(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.astype(np.float16)).view(np.uint8).reshape(-1, 2)


def random_blocks(rng, qtype: str, rows: int, cols: int, std: float) -> np.ndarray:
    """Random blocks whose dequantised values have mean ~0 and standard deviation ~std."""
    bs, bb = BLOCK[qtype]
    assert cols % bs == 0, (qtype, cols)
    nb = rows * (cols // bs)
    b = rand_bytes(rng, nb * bb).reshape(nb, bb)
    # per-block jitter of the scale in [0.75, 1.25) from one extra random byte per block
    jit = 0.75 + rand_bytes(rng, nb).astype(np.float64) / 512.0
    if qtype == "Q8_0":  # d, qs[32] int8; uniform int8: std 73.9
        b[:, 0:2] = f16_bytes(std / 73.9 * jit)
    elif qtype == "Q4_0":  # d, qs[16]; value d*(q-8), q uniform 0..15: std 4.61
        b[:, 0:2] = f16_bytes(std / 4.61 * jit)
    elif qtype == "Q4_1":  # d, m, qs[16]; value d*q + m
        d = std / 4.61 * jit
        b[:, 0:2] = f16_bytes(d)
        b[:, 2:4] = f16_bytes(-7.5 * d)
    elif qtype == "Q5_0":  # d, qh[4], qs[16]; value d*(q-16), q uniform 0..31: std 9.23
        b[:, 0:2] = f16_bytes(std / 9.23 * jit)
    elif qtype == "Q5_1":  # d, m, qh[4], qs[16]
        d = std / 9.23 * jit
        b[:, 0:2] = f16_bytes(d)
        b[:, 2:4] = f16_bytes(-15.5 * d)
    elif qtype in ("Q4_K", "Q5_K"):
        # d, dmin, scales[12] (8 x 6-bit scale, 8 x 6-bit min), [qh[32]], qs[128]
        # value = d*sc*q - dmin*m; choose dmin = d*mean(q) and m = sc so every sub-block is centred.
        qmean, qstd = (7.5, 4.61) if qtype == "Q4_K" else (15.5, 9.23)
        sc = 32 + (rand_bytes(rng, nb * 8).reshape(nb, 8) & 31).astype(np.uint8)  # 32..63
        m = sc
        d = std / (qstd * 47.5) * jit
        b[:, 0:2] = f16_bytes(d)
        b[:, 2:4] = f16_bytes(d * qmean)
        s = np.zeros((nb, 12), dtype=np.uint8)
        s[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
        s[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
        s[:, 8:12] = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
        b[:, 4:16] = s
    elif qtype == "Q6_K":  # ql[128], qh[64], scales[16] int8, d; value d*sc*(q-32), q 0..63: std 18.5
        sc = 32 + (rand_bytes(rng, nb * 16).reshape(nb, 16) & 63).astype(np.uint8)  # 32..95
        b[:, 192:208] = sc
        b[:, 208:210] = f16_bytes(std / (18.5 * 63.5) * jit)
    else:
        raise ValueError(qtype)
    return b.reshape(rows, (cols // bs) * bb)


# ---------------------------------------------------------------------------------------------
# tensor type selection
# ---------------------------------------------------------------------------------------------
KQ_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


def use_more_bits(i: int, n: int) -> bool:  # llama.cpp llama-quant.cpp
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def pick_type(ftype: str, name: str, cols: int, n_layer: int, tied: bool) -> str:
    if ftype == "mixed":  # Q4_K_M
        t = "Q4_K"
        if name == "output.weight" or (tied and name == "token_embd.weight"):
            t = "Q6_K"
        elif name.endswith("attn_v.weight") or name.endswith("ffn_down.weight"):
            il = int(name.split(".")[1])
            if use_more_bits(il, n_layer):
                t = "Q6_K"
    else:
        t = ftype
    if t in KQ_FALLBACK and cols % QK_K != 0:
        t = KQ_FALLBACK[t]
    if t in BLOCK and cols % BLOCK[t][0] != 0:
        t = "F16"
    return t


# ---------------------------------------------------------------------------------------------
# vocabularies
# ---------------------------------------------------------------------------------------------
def read_spm_vocab(path: str) -> dict:
    r = gguf.GGUFReader(path)
    f = r.fields
    v = {
        "model": str(f["tokenizer.ggml.model"].contents()),
        "tokens": list(f["tokenizer.ggml.tokens"].contents()),
        "scores": [float(x) for x in f["tokenizer.ggml.scores"].contents()],
        "types": [int(x) for x in f["tokenizer.ggml.token_type"].contents()],
    }
    for k in ("bos_token_id", "eos_token_id", "unknown_token_id"):
        key = "tokenizer.ggml." + k
        if key in f:
            v[k] = int(f[key].contents())
    return v


def synth_spm_vocab(n_vocab: int) -> dict:
    """Gemma-like SentencePiece vocab: <pad> <eos> <bos> <unk>, 256 byte tokens, then pieces."""
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>"]
    types = [3, 3, 3, 2]
    tokens += [f"<0x{i:02X}>" for i in range(256)]
    types += [6] * 256
    letters = "abcdefghijklmnopqrstuvwxyz"
    singles = ["\u2581"] + list(letters) + ["\u2581" + c for c in letters]
    tokens += singles
    types += [1] * len(singles)
    i = 0
    while len(tokens) < n_vocab:
        tokens.append(f"\u2581tok{i}")
        i += 1
    types += [1] * (len(tokens) - len(types))
    scores = [0.0] * 4 + [0.0] * 256 + [-float(i) for i in range(len(tokens) - 260)]
    return {"model": "llama", "tokens": tokens, "scores": scores, "types": types,
            "bos_token_id": 2, "eos_token_id": 1, "unknown_token_id": 3, "padding_token_id": 0,
            "add_bos_token": True}


def bytes_to_unicode() -> dict:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def synth_bpe_vocab(n_vocab: int) -> dict:
    """Qwen2-like byte-level BPE: 256 byte tokens, a few merges, specials, [PADi] up to n_vocab."""
    b2u = bytes_to_unicode()
    tokens = [b2u[i] for i in range(256)]
    G = b2u[ord(" ")]  # 'Ġ'
    merge_pairs = [("t", "h"), ("e", "r"), ("i", "n"), (G, "t"), (G, "a"), ("o", "n"), ("r", "e"),
                   ("a", "n"), ("e", "n"), (G, "s"), (G, "th"), ("th", "e"), (G, "the"), ("o", "u"),
                   ("e", "d"), (G, "w"), ("in", "g"), (G, "o"), (G, "c"), (G, "b"), ("i", "s"),
                   ("a", "t"), ("o", "r"), (G, "f"), (G, "m"), ("e", "s"), (G, "p"), ("l", "l")]
    merges = []
    for a, b in merge_pairs:
        tok = a + b
        assert a in tokens and b in tokens, (a, b)
        if tok not in tokens:
            tokens.append(tok)
            merges.append(f"{a} {b}")
    types = [1] * len(tokens)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    n_regular = len(tokens)
    pad_to = n_vocab - len(specials)
    for i in range(len(tokens), pad_to):
        tokens.append(f"[PAD{i}]")
        types.append(5)  # UNUSED, as llama.cpp's converter writes padding ids
    eot = len(tokens)
    tokens += specials
    types += [3, 3, 3]
    assert len(tokens) == n_vocab
    return {"model": "gpt2", "pre": "qwen2", "tokens": tokens, "types": types, "merges": merges,
            "bos_token_id": eot, "eos_token_id": eot + 2, "padding_token_id": eot,
            "add_bos_token": False, "n_regular": n_regular}


def get_vocab(hp: dict, spm_vocab_path: str) -> dict:
    kind = hp["vocab"]
    if kind == "spm":
        return read_spm_vocab(spm_vocab_path)
    if kind == "spm-synth":
        return synth_spm_vocab(hp["n_vocab"])
    if kind == "bpe":
        return synth_bpe_vocab(hp.get("n_vocab", 384))
    raise ValueError(kind)


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------
def tensor_list(arch: str, hp: dict, n_vocab: int):
    """(name, numpy shape [rows, cols] or [n], kind, std/mean) in llama.cpp converter order."""
    E, H, HKV, D, F = hp["n_embd"], hp["n_head"], hp["n_head_kv"], hp["head_dim"], hp["n_ff"]
    # std ~ gain/sqrt(fan_in): keeps activations O(1) and attention/logits reasonably peaked.
    # tied embeddings double as the output matrix: scale them so logits have std ~2.5
    emb_std = 2.5 / np.sqrt(E) if hp["tied"] else 1.0
    out = [("token_embd.weight", (n_vocab, E), "mat", emb_std)]
    for il in range(hp["n_layer"]):
        p = f"blk.{il}."
        out.append((p + "attn_norm.weight", (E,), "norm", 0.1))
        out.append((p + "attn_q.weight", (H * D, E), "mat", 1.5 / np.sqrt(E)))
        out.append((p + "attn_k.weight", (HKV * D, E), "mat", 1.5 / np.sqrt(E)))
        out.append((p + "attn_v.weight", (HKV * D, E), "mat", 1.0 / np.sqrt(E)))
        if arch == "qwen2":
            out.append((p + "attn_q.bias", (H * D,), "bias", 0.1))
            out.append((p + "attn_k.bias", (HKV * D,), "bias", 0.1))
            out.append((p + "attn_v.bias", (HKV * D,), "bias", 0.1))
        if arch in ("qwen3", "gemma3"):
            out.append((p + "attn_q_norm.weight", (D,), "norm", 0.1))
            out.append((p + "attn_k_norm.weight", (D,), "norm", 0.1))
        out.append((p + "attn_output.weight", (E, H * D), "mat", 1.0 / np.sqrt(H * D)))
        if arch == "gemma3":
            out.append((p + "post_attention_norm.weight", (E,), "norm", 0.1))
        out.append((p + "ffn_norm.weight", (E,), "norm", 0.1))
        out.append((p + "ffn_gate.weight", (F, E), "mat", 1.0 / np.sqrt(E)))
        out.append((p + "ffn_up.weight", (F, E), "mat", 1.0 / np.sqrt(E)))
        out.append((p + "ffn_down.weight", (E, F), "mat", 1.0 / np.sqrt(F)))
        if arch == "gemma3":
            out.append((p + "post_ffw_norm.weight", (E,), "norm", 0.1))
    out.append(("output_norm.weight", (E,), "norm", 0.1))
    if not hp["tied"]:
        out.append(("output.weight", (n_vocab, E), "mat", 2.0 / np.sqrt(E)))
    return out


def make_tensor(seed, name, shape, kind, std, ftype, hp, realistic):
    rng = tensor_rng(seed, name)
    if kind == "norm":  # multiplier around 1 (gemma: this is the stored 1+w)
        return rand_float(rng, shape, std, 1.0), None
    if kind == "bias":
        return rand_float(rng, shape, std), None
    rows, cols = shape
    t = pick_type(ftype, name, cols, hp["n_layer"], hp["tied"])
    if t == "F32":
        return rand_float(rng, shape, std), None
    if t == "F16":
        return rand_float(rng, shape, std).astype(np.float16), None
    if t in BLOCK and (realistic or t.endswith("_K")):
        return random_blocks(rng, t, rows, cols, std), getattr(QT, t)
    # BF16 and the legacy block types: quantise the float weights with gguf-py
    w = rand_float(rng, shape, std)
    qt = getattr(QT, t)
    return gguf.quants.quantize(w, qt), qt


def write_model(arch, shape, ftype, seed, path, spm_vocab_path=DEFAULT_SPM_VOCAB, quiet=False):
    hp = get_shape(arch, shape)
    realistic = shape != "tiny"
    vocab = get_vocab(hp, spm_vocab_path)
    n_vocab = len(vocab["tokens"])
    gguf_arch = "llama" if arch == "mistral" else arch

    w = gguf.GGUFWriter(path, gguf_arch)
    w.add_type("model")
    # HF transformers builds a MistralForCausalLM from a "llama" GGUF only if general.name == "mistral"
    w.add_name("mistral" if arch == "mistral" else f"kvsqueeze synthetic {arch} {shape}")
    w.add_description(f"random weights: make_synthetic_gguf.py --arch {arch} --shape {shape} "
                      f"--type {ftype} --seed {seed}")
    w.add_context_length(hp["n_ctx"])
    w.add_embedding_length(hp["n_embd"])
    w.add_block_count(hp["n_layer"])
    w.add_feed_forward_length(hp["n_ff"])
    w.add_head_count(hp["n_head"])
    w.add_head_count_kv(hp["n_head_kv"])
    w.add_rope_freq_base(hp["rope_base"])
    w.add_layer_norm_rms_eps(hp["eps"])
    if gguf_arch == "llama":
        w.add_vocab_size(n_vocab)
        w.add_rope_dimension_count(hp["head_dim"])
        if hp["head_dim"] * hp["n_head"] != hp["n_embd"]:
            w.add_key_length(hp["head_dim"])
            w.add_value_length(hp["head_dim"])
    elif arch == "qwen2":
        if hp["head_dim"] * hp["n_head"] != hp["n_embd"]:
            raise SystemExit("qwen2 needs head_dim * n_head == n_embd")
    elif arch in ("qwen3", "gemma3"):
        w.add_key_length(hp["head_dim"])
        w.add_value_length(hp["head_dim"])
    if arch == "gemma3":
        w.add_sliding_window(hp["swa"])
    w.add_file_type(FILE_TYPE[ftype])
    if ftype not in ("F32", "F16", "BF16"):
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    # tokenizer: model, tokens and types always, the rest when the vocab has them; in this order
    # (the file's bytes, and so the sha256 the fixtures record, depend on it)
    for key, add in (("model", w.add_tokenizer_model), ("pre", w.add_tokenizer_pre), ("tokens", w.add_token_list),
                     ("scores", w.add_token_scores), ("types", w.add_token_types), ("merges", w.add_token_merges),
                     ("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                     ("unknown_token_id", w.add_unk_token_id), ("padding_token_id", w.add_pad_token_id),
                     ("add_bos_token", w.add_add_bos_token)):
        if key in vocab or key in ("model", "tokens", "types"):
            add(vocab[key])

    for name, tshape, kind, std in tensor_list(arch, hp, n_vocab):
        data, raw = make_tensor(seed, name, tshape, kind, std, ftype, hp, realistic)
        w.add_tensor(name, data, raw_dtype=raw)
        if not quiet and realistic:
            print(f"  {name:34s} {raw.name if raw is not None else data.dtype}", file=sys.stderr)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", required=True, choices=ARCHS)
    ap.add_argument("--shape", default="tiny", choices=SHAPES)
    ap.add_argument("--type", required=True, choices=TYPES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spm-vocab", default=DEFAULT_SPM_VOCAB,
                    help="GGUF whose SentencePiece vocab the tiny llama/mistral/gemma3 models reuse "
                         "(default: ../shared/models/stories260K.gguf next to the repository, or under $KVSQ_SHARED_DIR)")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    write_model(a.arch, a.shape, a.type, a.seed, a.output, a.spm_vocab, a.quiet)
    if not a.quiet:
        print(f"{a.output}: {os.path.getsize(a.output)} bytes sha256 {sha256_file(a.output)}")


if __name__ == "__main__":
    main()
