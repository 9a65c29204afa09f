#!/usr/bin/env python3
"""kvpress reference fixtures: per-press raw scores and kept/masked indices, produced by kvpress itself.

Regenerate (from the repository root; stories takes ~1 min, gemma a few minutes on 2 CPU cores):

  /tmp/refenv/bin/python tests/reference/kvpress/make_kvpress_fixtures.py                  # everything
  /tmp/refenv/bin/python tests/reference/kvpress/make_kvpress_fixtures.py --model stories
  /tmp/refenv/bin/python tests/reference/kvpress/make_kvpress_fixtures.py --model gemma --only snapkv tova
  /tmp/refenv/bin/python tests/reference/kvpress/make_kvpress_fixtures.py --list

Environment: the /tmp/refenv venv of tests/reference/README.md plus
  /tmp/refenv/bin/pip install --no-deps kvpress==0.5.5
  /tmp/refenv/bin/pip install 'cachetools>=5.5.2,<6' 'fire>=0.6,<0.7' requests datasets
(kvpress 0.5.5 pins transformers<5.3; we keep transformers 5.23 and add the compatibility shims
below). See tests/reference/kvpress/README.md for the fixture format and per-press notes.

Everything is deterministic: fixed token ids, torch.manual_seed(SEED) before every forward,
float32 CPU, torch.set_num_threads(1).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import math
import os
import sys
import time
from contextlib import ExitStack

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
import make_logits_fixtures as mlf  # noqa: E402  (model/tokenizer loading, versions, sha256)

import numpy as np  # noqa: E402
import torch  # noqa: E402

OUT_DIR = os.path.join(REPO, "tests", "fixtures", "kvpress")
SEED = 42
RATIOS = [0.25, 0.5, 0.75]
DIGITS = 6

STORIES_TEXT = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with "
    "her friends. One day, she saw a big red ball under a tree. She ran to get it, but a small dog took "
    "it first. Lily was sad, so her mom said they could look for the dog together. They walked "
    "until they found the dog next to a big pond."
)
STORIES_QUESTION = " What did the dog take from Lily? The dog took the"

GEMMA_TEXT = " ".join(mlf.LONG_TEXT.split(" ")[:190])
GEMMA_QUESTION = "\n\nQuestion: What did Thomas Hale record in his log? Answer:"


# ----------------------------------------------------------------------------------------------
# transformers 5.23 <-> kvpress 0.5.5 compatibility shims (kvpress pins transformers<5.3)
# ----------------------------------------------------------------------------------------------
def _cache_position_pre_hook(module, args, kwargs):
    """transformers >= 5.3 no longer passes `cache_position` to the attention modules, but kvpress's
    BasePress.forward_hook reads kwargs["cache_position"] (is_prefilling). Recreate it exactly as
    transformers used to: arange(past_len, past_len + q_len)."""
    if "cache_position" not in kwargs:
        hs = kwargs["hidden_states"]
        pkv = kwargs.get("past_key_values")
        past = pkv.get_seq_length(module.layer_idx) if pkv is not None else 0
        kwargs["cache_position"] = torch.arange(past, past + hs.shape[1], device=hs.device)
    return args, kwargs


class BoundRotary(torch.nn.Module):
    """Gemma3's single rotary module needs `layer_type` in 5.x (forward(x, position_ids, layer_type)) and
    has `{layer_type}_inv_freq` instead of `inv_freq`. kvpress calls `module.rotary_emb(x, pos)` and reads
    `module.rotary_emb.inv_freq`; bind the layer's own type so those calls see that layer's RoPE."""

    def __init__(self, rot, layer_type):
        super().__init__()
        object.__setattr__(self, "rot", rot)  # not a submodule
        self.layer_type = layer_type
        self.inv_freq = getattr(rot, f"{layer_type}_inv_freq")

    def forward(self, x, position_ids, layer_type=None):
        return self.rot(x, position_ids, layer_type or self.layer_type)


def install_shims(model):
    for layer in model.model.layers:
        layer.self_attn.register_forward_pre_hook(_cache_position_pre_hook, with_kwargs=True)


def rebind_gemma_rotary(model):
    if model.config.model_type != "gemma3_text":
        return
    rot = model.model.rotary_emb
    for i, layer in enumerate(model.model.layers):
        layer.self_attn.rotary_emb = BoundRotary(rot, model.config.layer_types[i])


# ----------------------------------------------------------------------------------------------
def rnd(x: float):
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(f"{x:.{DIGITS}g}")


def rnd_list(t) -> list:
    a = t.detach().to(torch.float64).cpu().numpy()
    if a.ndim == 1:
        return [rnd(float(v)) for v in a]
    return [rnd_list(torch.from_numpy(r)) for r in a]


def scorer_paths(press, prefix="press"):
    """All ScorerPress objects inside a press tree, with a dotted path."""
    import kvpress
    out = []
    if isinstance(press, (kvpress.ScorerPress, kvpress.FinchPress)):  # FinchPress has score() too
        out.append((prefix, press))
    for attr in ("press", "_leverage_press", "_non_causal_press"):
        sub = getattr(press, attr, None) if attr in getattr(press, "__dict__", {}) else None
        if sub is not None:
            out += scorer_paths(sub, f"{prefix}.{attr}")
    if isinstance(press, kvpress.ComposedPress):
        for i, p in enumerate(press.presses):
            out += scorer_paths(p, f"{prefix}.presses[{i}]")
    return out


class Recorder:
    """Wraps every ScorerPress.score in a press tree and snapshots each attention layer's cache before
    and after kvpress's forward hook."""

    def __init__(self, model):
        self.model = model
        self.calls = []  # (path, layer, scores[H][n] tensor, key positions per head or None)
        self.before = {}  # layer -> (keys, values) clone before compression
        self.after = {}  # layer -> dict(keys, values, masked)
        self.cache = None

    def wrap_scorers(self, press):
        for path, p in scorer_paths(press):
            orig = p.score

            def wrapped(module, hidden_states, keys, values, attentions, kwargs, _orig=orig, _path=path):
                s = _orig(module, hidden_states, keys, values, attentions, kwargs)
                self.calls.append((_path, int(module.layer_idx), s[0].detach().clone().float(),
                                   self.positions_of(int(module.layer_idx), keys)))
                return s

            object.__setattr__(p, "score", wrapped)

    def positions_of(self, layer, keys):
        """Original positions of the keys handed to score() (None when they are exactly 0..n-1)."""
        full = self.before.get(layer)
        if full is None:
            return None
        fk = full[0][0]
        k = keys[0]
        if k.shape == fk.shape and torch.equal(k, fk):
            return None
        pos = []
        for h in range(k.shape[0]):
            lut = {fk[h, i].numpy().tobytes(): i for i in range(fk.shape[1])}
            pos.append([lut.get(k[h, j].numpy().tobytes(), -1) for j in range(k.shape[1])])
        return pos

    def pre_hook(self, module, args, kwargs, output):  # registered BEFORE kvpress's hook
        cache = kwargs["past_key_values"]
        if cache is not self.cache:  # e.g. DuoAttention's calibration forwards
            return output
        li = module.layer_idx
        if li not in self.before:  # first pass only (KVzip/KVCompose run extra passes)
            self.before[li] = (cache.layers[li].keys.detach().clone(), cache.layers[li].values.detach().clone())
        return output

    def post_hook(self, module, args, kwargs, output):  # registered AFTER kvpress's hook
        cache = kwargs["past_key_values"]
        if cache is not self.cache:
            return output
        li = module.layer_idx
        self.after[li] = dict(keys=cache.layers[li].keys.detach().clone(),
                              values=cache.layers[li].values.detach().clone(),
                              masked=getattr(module, "masked_key_indices", None))
        return output


def match_kept(full_k, full_v, k, v, rotary=None, head_dim=None):
    """Kept original positions per head, from the compressed cache. Keys are matched exactly; if keys were
    re-rotated (KeyRerotationPress, FinchPress), values are matched and the key is checked against the
    original key re-rotated from position i to slot j."""
    H = k.shape[1]
    out = []
    for h in range(H):
        fk, fv, kk, vv = full_k[0, h] + 0.0, full_v[0, h], k[0, h] + 0.0, v[0, h]  # +0.0: -0.0 -> 0.0
        zero = (kk == 0).all(dim=0)  # channels zeroed by ThinK (e.g. ComposedPress([..., ThinKPress]))
        if bool(zero.any()) and kk.shape[0] > 1:
            fk = fk.clone()
            fk[:, zero] = 0.0
        lut = {fk[i].numpy().tobytes(): i for i in range(fk.shape[0])}
        idx = [lut.get(kk[j].numpy().tobytes(), -1) for j in range(kk.shape[0])]
        if -1 in idx and rotary is not None:
            idx = []
            for j in range(kk.shape[0]):
                cands = [i for i in range(fv.shape[0]) if torch.equal(fv[i], vv[j])]
                best, err = -1, 1e30
                for i in cands:
                    ang = (j - i) * rotary.float()
                    cos, sin = torch.cat([ang, ang]).cos(), torch.cat([ang, ang]).sin()
                    x = fk[i]
                    rh = torch.cat([-x[head_dim // 2:], x[: head_dim // 2]])
                    e = float((x * cos + rh * sin - kk[j]).abs().max())
                    if e < err:
                        best, err = i, e
                idx.append(best if err < 1e-3 else -1)
        out.append(idx)
    return out


def masked_per_head(masked, H):
    if masked is None:
        return None
    b, hh, ss = (t.cpu().tolist() for t in masked)
    per = [[] for _ in range(H)]
    for bi, h, s in zip(b, hh, ss):
        assert bi == 0
        per[h].append(int(s))
    return [sorted(p) for p in per]


def ties_at_cut(scores, kept):
    """Per head: number of evicted slots whose score equals the lowest kept score (ties at the cut)."""
    out = []
    for h, ks in enumerate(kept):
        s = scores[h]
        kset = set(ks)
        if not kset or len(kset) == s.shape[0]:
            out.append(0)
            continue
        lo = min(float(s[i]) for i in kset)
        out.append(sum(1 for i in range(s.shape[0]) if i not in kset and float(s[i]) == lo))
    return out


# ----------------------------------------------------------------------------------------------
# press specifications
# ----------------------------------------------------------------------------------------------
def K():
    import kvpress
    return kvpress


def press_specs(model_name: str) -> dict:
    """name -> dict(build=f(ratio)->press, ratios, attn, notes, kind). `kind` is 'scorer' (default),
    'think', 'simlayerkv', 'duo', 'finch', 'kvzip', 'kvcompose'."""
    kp = K()
    st = model_name == "stories"
    lag = 16 if st else 32
    small_chunk = 32 if st else 64
    S = {}

    def add(name, build, **kw):
        S[name] = dict(build=build, ratios=kw.pop("ratios", RATIOS), attn=kw.pop("attn", "sdpa"),
                       notes=kw.pop("notes", []), kind=kw.pop("kind", "scorer"), **kw)

    add("random", lambda r: kp.RandomPress(compression_ratio=r, seed=SEED))
    add("knorm", lambda r: kp.KnormPress(compression_ratio=r))
    add("streaming_llm", lambda r: kp.StreamingLLMPress(compression_ratio=r))
    add("snapkv", lambda r: kp.SnapKVPress(compression_ratio=r))
    add("snapkv_eager", lambda r: kp.SnapKVPress(compression_ratio=r), attn="eager",
        notes=["eager attention: SnapKV slices the model's own attention matrix instead of recomputing it"])
    add("tova", lambda r: kp.TOVAPress(compression_ratio=r))
    add("observed_attention", lambda r: kp.ObservedAttentionPress(compression_ratio=r), attn="eager")
    add("expected_attention", lambda r: kp.ExpectedAttentionPress(compression_ratio=r))
    add("expected_attention_eps1e-2", lambda r: kp.ExpectedAttentionPress(compression_ratio=r, epsilon=1e-2))
    add("keydiff", lambda r: kp.KeyDiffPress(compression_ratio=r))
    add("lagkv", lambda r: kp.LagKVPress(compression_ratio=r),
        notes=["default lag_size=128: the input is shorter than n_sink + 2*lag, so the 'no compression' ramp"
               " branch runs (sinks 1, then arange/(L-n_sink)) and ScorerPress still prunes: StreamingLLM-like"])
    add(f"lagkv_lag{lag}", lambda r: kp.LagKVPress(compression_ratio=r, lag_size=lag))
    add(f"lagkv_lag{lag}_cross", lambda r: kp.LagKVPress(compression_ratio=r, lag_size=lag, cross_scoring=True))
    add("non_causal_attn", lambda r: kp.NonCausalAttnPress(compression_ratio=r))
    add("leverage", lambda r: kp.LeverageScorePress(compression_ratio=r), record_sketch=True)
    add("compactor", lambda r: kp.CompactorPress(compression_ratio=r), record_sketch=True)
    add("cur", lambda r: kp.CURPress(compression_ratio=r))
    add("cap", lambda r: kp.CapPress(compression_ratio=r))
    add("pyramidkv", lambda r: kp.PyramidKVPress(compression_ratio=r))
    add("pyramidkv_w16", lambda r: kp.PyramidKVPress(compression_ratio=r, window_size=16))
    add("adakv_expected_attention",
        lambda r: kp.AdaKVPress(kp.ExpectedAttentionPress(compression_ratio=r)))
    add("adakv_expected_attention_eps1e-2",
        lambda r: kp.AdaKVPress(kp.ExpectedAttentionPress(compression_ratio=r, epsilon=1e-2)))
    add("adakv_snapkv", lambda r: kp.AdaKVPress(kp.SnapKVPress(compression_ratio=r)))
    add("adakv_compactor", lambda r: kp.AdaKVPress(kp.CompactorPress(compression_ratio=r)), record_sketch=True)
    add("criticalkv_expected_attention",
        lambda r: kp.CriticalKVPress(kp.ExpectedAttentionPress(compression_ratio=r, use_vnorm=False)))
    add("criticaladakv_expected_attention",
        lambda r: kp.CriticalAdaKVPress(kp.ExpectedAttentionPress(compression_ratio=r, use_vnorm=False)))
    add(f"chunk_knorm_{small_chunk}", lambda r: kp.ChunkPress(kp.KnormPress(compression_ratio=r),
                                                              chunk_length=small_chunk))
    add(f"chunk_expected_attention_{small_chunk}",
        lambda r: kp.ChunkPress(kp.ExpectedAttentionPress(compression_ratio=r), chunk_length=small_chunk))
    add("chunkkv_snapkv", lambda r: kp.ChunkKVPress(kp.SnapKVPress(compression_ratio=r), chunk_length=20))
    add("chunkkv_knorm", lambda r: kp.ChunkKVPress(kp.KnormPress(compression_ratio=r), chunk_length=20))
    add(f"block_keydiff_{small_chunk}", lambda r: kp.BlockPress(kp.KeyDiffPress(compression_ratio=r),
                                                                block_size=small_chunk))
    add("per_layer_knorm", None, ratios=[None], per_layer=True)
    add("key_rerotation_streaming_llm",
        lambda r: kp.KeyRerotationPress(kp.StreamingLLMPress(compression_ratio=r)), rerotates=True)
    add("key_rerotation_snapkv", lambda r: kp.KeyRerotationPress(kp.SnapKVPress(compression_ratio=r)),
        rerotates=True)
    add("composed_snapkv_think", lambda r: kp.ComposedPress([kp.SnapKVPress(compression_ratio=r),
                                                             kp.ThinKPress(key_channel_compression_ratio=0.5)]))
    add("think", lambda r: kp.ThinKPress(key_channel_compression_ratio=r), kind="think")
    add("simlayerkv", lambda r: kp.SimLayerKVPress(), ratios=[None], kind="simlayerkv",
        notes=["defaults (lazy_threshold=1.0, n_recent=1024) never compress"])
    add("simlayerkv_small", lambda r: kp.SimLayerKVPress(lazy_threshold=r, n_recent=24 if st else 64,
                                                         n_initial=4, n_last=1),
        ratios=[0.3, 0.5, 0.7], kind="simlayerkv", ratio_is="lazy_threshold")
    add("duo_attention_on_the_fly", lambda r: kp.DuoAttentionPress(head_compression_ratio=r,
                                                                    on_the_fly_scoring=True), kind="duo")
    add("duo_attention_on_the_fly_sink4_recent16",
        lambda r: kp.DuoAttentionPress(head_compression_ratio=r, on_the_fly_scoring=True), kind="duo",
        duo_override=(4, 16))
    add("finch", lambda r: kp.FinchPress(compression_ratio=r), kind="finch", rerotates=True)
    add("finch_no_rerotate_no_norm",
        lambda r: kp.FinchPress(compression_ratio=r, rerotate_keys=False, normalize_scores=False), kind="finch")
    add("kvzip", lambda r: kp.KVzipPress(compression_ratio=r), kind="kvzip")
    add("kvzip_layerwise", lambda r: kp.KVzipPress(compression_ratio=r, layerwise=True), kind="kvzip")
    add("kvzip_plus", lambda r: kp.KVzipPress(compression_ratio=r, kvzip_plus_normalization=True), kind="kvzip")
    add("kvcompose", lambda r: kp.KVComposePress(compression_ratio=r), kind="kvcompose")
    add("kvcompose_unstructured", lambda r: kp.KVComposePress(compression_ratio=r, structured=False),
        kind="kvcompose")
    return S


SKIPPED = {
    "qfilter": "QFilterPress needs learned per-model filters downloaded from the HF hub (nthngdy/*_qfilt)",
    "kvzap": "KVzapPress needs learned nvidia/KVzap-* weights from the HF hub",
    "fastkvzip": "FastKVzipPress needs learned Jang-Hyun/Fast-KVzip gates from the HF hub",
    "duo_attention_table": "DuoAttentionPress(on_the_fly_scoring=False) downloads mit-han-lab pattern tables "
                           "(6 checkpoints only; neither model is one of them)",
    "expected_attention_stats": "ExpectedAttentionStatsPress loads precomputed query statistics from the hub",
    "lukv": "LUKVPress downloads published per-model prune-ratio curves (Llama-3.1-8B only)",
}

PER_LAYER_RATIOS = {"stories": [0.1, 0.3, 0.5, 0.7, 0.9],
                    "gemma": [round(0.25 + 0.5 * i / 17, 4) for i in range(18)]}


# ----------------------------------------------------------------------------------------------
def load(model_name):
    torch.set_num_threads(1)
    if model_name == "stories":
        path, overrides = mlf.STORIES, {"pad_token_id": None}
        text, question = STORIES_TEXT, STORIES_QUESTION
    else:
        path, overrides = mlf.GEMMA, {}
        text, question = GEMMA_TEXT, GEMMA_QUESTION
    m = mlf.load_model(path, overrides)
    m.set_attn_implementation("sdpa")
    install_shims(m)
    tok = mlf.load_tokenizer(path)
    ids = tok(text, return_tensors="pt").input_ids  # BOS prepended by the tokenizer
    q_ids = tok(question, add_special_tokens=False, return_tensors="pt").input_ids
    assert ids[0, 0].item() == tok.bos_token_id
    return dict(name=model_name, path=path, overrides=overrides, model=m, tok=tok, text=text, question=question,
                ids=ids, q_ids=q_ids)


def set_attn(m, attn):
    if m.config._attn_implementation != attn:
        m.set_attn_implementation(attn)


def forward(ctx, press, ids, rec, extra_ctx=None):
    from transformers import DynamicCache
    m = ctx["model"]
    cache = DynamicCache(config=m.config)
    rec.cache = cache
    hooks = []
    for layer in m.model.layers:
        hooks.append(layer.self_attn.register_forward_hook(rec.pre_hook, with_kwargs=True))
    torch.manual_seed(SEED)
    try:
        with torch.no_grad(), ExitStack() as es:
            if extra_ctx:
                extra_ctx(es)
            es.enter_context(press(m))
            rebind_gemma_rotary(m)
            for layer in m.model.layers:
                hooks.append(layer.self_attn.register_forward_hook(rec.post_hook, with_kwargs=True))
            m(input_ids=ids, past_key_values=cache, use_cache=True)
    finally:
        for h in hooks:
            h.remove()
    return cache


def layer_records(ctx, rec, cache, n_layers, H, rerotates=False, masked_from_modules=False):
    m = ctx["model"]
    recs = []
    for li in range(n_layers):
        r = {"layer": li}
        full = rec.before.get(li)
        if full is None:
            r["compressed"] = False
            recs.append(r)
            continue
        fk, fv = full
        ck, cv = cache.layers[li].keys, cache.layers[li].values
        if masked_from_modules:
            masked = getattr(m.model.layers[li].self_attn, "masked_key_indices", None)
        else:
            masked = rec.after.get(li, {}).get("masked")
        mk = masked_per_head(masked, H)
        L = fk.shape[2]
        if ck.shape[2] != L:
            rot = getattr(m.model.layers[li].self_attn.rotary_emb, "inv_freq", None) if rerotates else None
            kept = match_kept(fk, fv, ck, cv, rot, fk.shape[-1])
            assert all(-1 not in k for k in kept), f"layer {li}: could not match kept keys"
            r["mode"] = "pruned"
            r["kept"] = [sorted(k) for k in kept]
            r["n_kept"] = [len(k) for k in kept]
        elif mk is not None:
            r["mode"] = "masked"
            r["kept"] = [sorted(set(range(L)) - set(x)) for x in mk]
            r["n_kept"] = [len(k) for k in r["kept"]]
        else:
            r["mode"] = "none"
            r["kept"] = "all"
            r["n_kept"] = [L] * H
        recs.append(r)
    return recs


def attach_scores(recs, rec, kept_key="kept"):
    by_layer = {}
    for path, li, s, pos in rec.calls:
        by_layer.setdefault(li, []).append((path, s, pos))
    for r in recs:
        calls = by_layer.get(r["layer"], [])
        if not calls:
            continue
        r["score_calls"] = []
        for path, s, pos in calls:
            c = {"scorer": path, "n": int(s.shape[-1]), "scores": rnd_list(s)}
            if pos is not None:
                c["positions"] = pos
            r["score_calls"].append(c)
        # ties at the cut for the plain case (one call of the top-level scorer over the full cache)
        if len(calls) == 1 and calls[0][2] is None and isinstance(r.get(kept_key), list):
            r["ties_at_cut"] = ties_at_cut(calls[0][1], r[kept_key])


def cfg_of(press):
    import dataclasses
    d = {"class": type(press).__name__}
    if dataclasses.is_dataclass(press):
        for f in dataclasses.fields(press):
            if f.name.startswith("_") or not f.init:
                continue
            v = getattr(press, f.name)
            if hasattr(v, "score") or hasattr(v, "compress"):
                d[f.name] = cfg_of(v)
            elif isinstance(v, list) and v and hasattr(v[0], "compress"):
                d[f.name] = [cfg_of(x) for x in v]
            elif isinstance(v, (int, float, str, bool, type(None), list)):
                d[f.name] = v
            else:
                d[f.name] = repr(v)
    else:
        for k, v in vars(press).items():
            if k.startswith("_"):
                continue
            d[k] = cfg_of(v) if hasattr(v, "score") else (v if isinstance(v, (int, float, str, bool)) else repr(v))
    return d


# ----------------------------------------------------------------------------------------------
def run_press(ctx, name, spec):
    kp = K()
    m = ctx["model"]
    cfg = m.config
    n_layers, H = cfg.num_hidden_layers, cfg.num_key_value_heads
    set_attn(m, spec["attn"])
    runs = []
    ids = ctx["ids"]
    extra = {}
    kind = spec["kind"]
    for ratio in spec["ratios"]:
        rec = Recorder(m)
        run = {"ratio": ratio}
        if spec.get("per_layer"):
            ratios = PER_LAYER_RATIOS[ctx["name"]]
            press = kp.PerLayerCompressionPress(press=kp.KnormPress(), compression_ratios=ratios)
            run["ratio"] = None
            run["compression_ratios"] = ratios
        else:
            press = spec["build"](ratio)
        if spec.get("ratio_is"):
            run[spec["ratio_is"]] = ratio
        rec.wrap_scorers(press)
        sketches = []
        if spec.get("record_sketch") and ctx["name"] == "stories":
            orig_randn = torch.randn

            def randn_rec(*a, **k):
                t = orig_randn(*a, **k)
                sketches.append(t.clone())
                return t
        extra_ctx = None
        run_ids = ids

        if kind == "think":
            qcap = {}
            orig_cwq = press.compute_window_queries

            def cwq(module, hidden_states, position_embeddings):
                q = orig_cwq(module, hidden_states, position_embeddings)
                qcap[int(module.layer_idx)] = q.clone()
                return q
            object.__setattr__(press, "compute_window_queries", cwq)
        if kind == "simlayerkv":
            lazy = {}
            orig_lazy = press.is_lazy

            def is_lazy(module, hidden_states, keys, position_embeddings):
                aw = kp.SnapKVPress.compute_window_attention(module, hidden_states, keys, press.n_last,
                                                              position_embeddings).mean((0, 1, 2))
                mass = aw[: press.n_initial].sum() + aw[-press.n_recent:].sum()
                res = orig_lazy(module, hidden_states, keys, position_embeddings)
                lazy[int(module.layer_idx)] = {"mass": rnd(float(mass)), "lazy": bool(res)}
                return res
            object.__setattr__(press, "is_lazy", is_lazy)
        if kind == "duo":
            extra_ctx = duo_patch(ctx, press, spec, extra)
        if kind == "finch":
            # kvpress marks the question start with a delimiter token that its embedding hook removes.
            # FinchPress.update_model_and_tokenizer would add '<|finch_sep|>' and resize the embeddings;
            # we instead point delimiter_token_id at an existing id that occurs in neither part (its
            # embedding row is dropped before use, so this is equivalent and leaves the model untouched).
            used = set(ids[0].tolist()) | set(ctx["q_ids"][0].tolist())
            delim = next(i for i in range(cfg.vocab_size - 1, 0, -1) if i not in used)
            press.delimiter_token_id = delim
            run_ids = torch.cat([ids, torch.tensor([[delim]]), ctx["q_ids"]], dim=1)
            run["delimiter_token_id_used"] = delim
        if kind == "kvzip":
            extra_ctx = kvzip_patch(ctx, press, extra)
        if kind == "kvcompose":
            extra_ctx = kvcompose_patch(press, extra)

        if spec.get("record_sketch") and ctx["name"] == "stories":
            torch.randn = randn_rec
        try:
            cache = forward(ctx, press, run_ids, rec, extra_ctx)
        finally:
            torch.randn = orig_randn if (spec.get("record_sketch") and ctx["name"] == "stories") else torch.randn

        if kind == "kvcompose":
            recs = [{"layer": li} for li in range(n_layers)]
        else:
            recs = layer_records(ctx, rec, cache, n_layers, H, rerotates=spec.get("rerotates", False),
                                 masked_from_modules=kind in ("kvzip",))
        attach_scores(recs, rec)
        if kind == "think":
            for r in recs:
                li = r["layer"]
                if li not in qcap:
                    continue
                q = qcap[li]
                G = cfg.num_attention_heads // H
                qn = q.pow(2).mean(dim=2).view(1, H, G, -1).mean(2)[0]
                kn = rec.before[li][0][0].pow(2).mean(dim=1)
                r["channel_scores"] = rnd_list(qn * kn)
                ck = cache.layers[li].keys[0]
                r["pruned_channels"] = [[c for c in range(ck.shape[-1]) if bool((ck[h, :, c] == 0).all())]
                                        for h in range(H)]
        if kind == "simlayerkv":
            for r in recs:
                if r["layer"] in lazy:
                    r.update(lazy[r["layer"]])
            run["press_compression_ratio"] = rnd(press.compression_ratio)
        if kind == "duo":
            run["head_scores"] = [rnd_list(torch.as_tensor(row)) for row in extra["head_scores"]]
            run["streaming_mask"] = press.streaming_mask.int().tolist()
            run["sink_size"], run["recent_size"] = press.sink_size, press.recent_size
            run["press_compression_ratio"] = rnd(press.compression_ratio)
        if kind == "finch":
            run["window_size"] = press.window_size
            run["input_ids_with_delimiter"] = run_ids[0].tolist()
        if kind == "kvzip":
            sv = extra["score_val"]
            for r in recs:
                r["score_calls"] = [{"scorer": "kvzip.score_val", "n": int(sv.shape[-1]),
                                     "scores": rnd_list(sv[r["layer"]])}]
            run["repeat_pass_input_ids"] = extra["repeat_ids"]
            run["prefix_length"] = extra["prefix_length"]
        if kind == "kvcompose":
            for r in recs:
                li = r["layer"]
                r["score_calls"] = [{"scorer": "kvcompose.scores", "n": int(extra["scores"].shape[-1]),
                                     "scores": rnd_list(extra["scores"][li])}]
                r["composite_layer"] = rnd_list(extra["composite_layer"][li])
            run["important_per_layer"] = [int(x) for x in extra["important_per_layer"]]
            run["important_per_head"] = extra["important_per_head"]
            # KVCompose compresses after the context manager exits (no per-layer hook snapshot)
            for r in recs:
                li = r["layer"]
                L = extra["context_len"]
                ck = cache.layers[li].keys
                r["cache_len_after"] = int(ck.shape[2])
                fk = extra["full_keys"][li]
                fv = extra["full_values"][li]
                mk = masked_per_head(getattr(m.model.layers[li].self_attn, "masked_key_indices", None), H)
                if mk is not None:
                    r["mode"] = "masked"
                    r["kept"] = [sorted(set(range(L)) - set(x)) for x in mk]
                    r["n_kept"] = [len(k) for k in r["kept"]]
                elif ck.shape[2] != L:
                    r["mode"] = "pruned"
                    r["kept"] = [sorted(k) for k in match_kept(fk, fv, ck, cache.layers[li].values)]
                    r["n_kept"] = [len(k) for k in r["kept"]]
        if sketches:
            run["sketches"] = [{"shape": list(s.shape), "values": rnd_list(s.reshape(-1, s.shape[-1]))}
                               for s in sketches]
        if spec.get("per_layer"):
            run["press"] = cfg_of(press)
        else:
            run["press"] = cfg_of(press)
        run["layers"] = recs
        runs.append(run)
        for li in range(n_layers):  # masks must not leak into the next run
            m.model.layers[li].self_attn.masked_key_indices = None
    set_attn(m, "sdpa")
    return runs


# ---- special presses --------------------------------------------------------------------------
def duo_patch(ctx, press, spec, extra):
    """DuoAttention on-the-fly scoring loads kmfoda/booksum (hub) and AutoTokenizer(name_or_path). Offline we
    substitute 50 deterministic calibration texts (rotations of our own text) and our GGUF tokenizer; the
    scoring code itself is kvpress's `duo_attention_on_the_fly`."""
    import pandas as pd
    import kvpress.presses.duo_attention_press as dap
    words = (ctx["text"] + ctx["question"]).split(" ")
    texts = [" ".join(words[i % len(words):] + words[: i % len(words)]) for i in range(0, 50 * 7, 7)]

    class FakeDS:
        def to_pandas(self):
            return pd.DataFrame({"chapter": texts})

    class FakeTok:
        @staticmethod
        def from_pretrained(*a, **k):
            return ctx["tok"]

    def enter(es):
        saved = (dap.load_dataset, dap.AutoTokenizer)
        dap.load_dataset = lambda *a, **k: FakeDS()
        dap.AutoTokenizer = FakeTok
        dap.cache.clear()
        orig_post = press.post_init_from_model

        def post(model):
            orig_post(model)
            extra["head_scores"] = dap.duo_attention_on_the_fly(model).tolist()
            if spec.get("duo_override"):
                press.sink_size, press.recent_size = spec["duo_override"]
        object.__setattr__(press, "post_init_from_model", post)

        def restore():
            dap.load_dataset, dap.AutoTokenizer = saved
        es.callback(restore)
    extra["calibration_texts"] = texts
    return enter


def kvzip_patch(ctx, press, extra):
    """KVzip calls AutoTokenizer.from_pretrained(name_or_path); give it our GGUF tokenizer. It has no chat
    template, so kvpress uses prefix '' and suffix '\\n'. Capture score_val before compress_post."""
    import kvpress.presses.kvzip_press as kzp

    class FakeTok:
        @staticmethod
        def from_pretrained(*a, **k):
            return ctx["tok"]

    def enter(es):
        saved = kzp.AutoTokenizer
        kzp.AutoTokenizer = FakeTok
        orig_cp = press.compress_post
        orig_prep = press.prepare

        def prep(model, tokenizer, prev_postfix_size=8):
            pairs = orig_prep(model, tokenizer, prev_postfix_size)
            extra["repeat_ids"] = [r[0].tolist() for _, r in pairs]
            extra["prefix_length"] = press.prefix_length
            return pairs

        def cp(model):
            extra["score_val"] = press.score_val.detach().clone().float()[:, 0]
            return orig_cp(model)
        object.__setattr__(press, "compress_post", cp)
        object.__setattr__(press, "prepare", prep)

        def restore():
            kzp.AutoTokenizer = saved
        es.callback(restore)
    return enter


def kvcompose_patch(press, extra):
    orig_cc = press.compress_cache

    def cc(model):
        extra["scores"] = press.scores.detach().clone()[:, :, :]
        extra["composite_layer"] = press.composite_scores_per_layer.detach().clone()
        extra["important_per_layer"] = list(press.important_per_layer)
        extra["important_per_head"] = press.important_per_head.tolist()
        extra["context_len"] = press.context_len
        extra["full_keys"] = [press.cache.layers[i].keys[:, :, : press.context_len].clone()
                              for i in range(press.num_layers)]
        extra["full_values"] = [press.cache.layers[i].values[:, :, : press.context_len].clone()
                                for i in range(press.num_layers)]
        return orig_cc(model)
    object.__setattr__(press, "compress_cache", cc)
    return None


# ----------------------------------------------------------------------------------------------
def model_block(ctx):
    m = ctx["model"]
    c = m.config
    d = {"file": os.path.relpath(ctx["path"], REPO) if ctx["name"] == "stories" else
         "~/.cache/kvsqueeze/models/" + os.path.basename(ctx["path"]),
         "sha256": mlf.sha256_file(ctx["path"]), "hf_class": type(m).__name__,
         "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
         "num_key_value_heads": c.num_key_value_heads, "head_dim": getattr(c, "head_dim", None),
         "hidden_size": c.hidden_size, "config_overrides": ctx["overrides"]}
    if getattr(c, "layer_types", None):
        d["layer_types"] = list(c.layer_types)
        d["sliding_window"] = c.sliding_window
    return d


def versions():
    v = mlf.versions()
    v["kvpress"] = md.version("kvpress")
    return v


def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")


def dedupe_scores(runs):
    """Score calls (and sketches) identical to the first run's are replaced by "same_as_first_run"."""
    if len(runs) < 2:
        return
    for li in range(len(runs[0]["layers"])):
        first = runs[0]["layers"][li].get("score_calls")
        if not isinstance(first, list):
            continue
        for r in runs[1:]:
            calls = r["layers"][li].get("score_calls")
            if not isinstance(calls, list):
                continue
            if calls == first:
                r["layers"][li]["score_calls"] = "same_as_first_run"
                continue
            for j, c in enumerate(calls):
                if j < len(first) and c == first[j]:
                    calls[j] = {"scorer": c["scorer"], "same_as_first_run": True}
    for r in runs[1:]:
        if "sketches" in r and r["sketches"] == runs[0].get("sketches"):
            r["sketches"] = "same_as_first_run"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["stories", "gemma", "all"], default="all")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    import kvpress  # noqa: F401  (patches attention functions on import)
    if args.list:
        for n in press_specs("stories"):
            print(n)
        return
    models = ["stories", "gemma"] if args.model == "all" else [args.model]
    for mn in models:
        t0 = time.time()
        ctx = load(mn)
        specs = press_specs(mn)
        names = args.only or list(specs)
        vers = versions()
        summary = {}
        for name in names:
            if name not in specs:
                print(f"unknown press {name}", file=sys.stderr)
                continue
            spec = specs[name]
            t = time.time()
            fx = {"format": "kvsqueeze-kvpress-v1", "press_name": name, "model": model_block(ctx),
                  "reference": {"versions": vers, "attn_implementation": spec["attn"], "dtype": "float32",
                                "device": "cpu", "seed": SEED,
                                "torch_manual_seed_before_each_forward": SEED,
                                "cache": "transformers DynamicCache(config=model.config)",
                                "shims": ["cache_position pre-hook (transformers 5.23 no longer passes it)"] + (
                                    ["gemma3 rotary bound to the layer's type for kvpress's rotary_emb calls"]
                                    if mn == "gemma" else [])},
                  "input": {"text": ctx["text"], "ids": ctx["ids"][0].tolist(), "n_tokens": ctx["ids"].shape[1],
                            "bos_included": True},
                  "notes": spec["notes"]}
            if spec["kind"] == "finch":
                fx["input"]["question_text"] = ctx["question"]
                fx["input"]["question_ids"] = ctx["q_ids"][0].tolist()
            try:
                runs = run_press(ctx, name, spec)
                dedupe_scores(runs)
                fx["runs"] = runs
                status = "ok"
            except Exception as e:  # record why a press cannot run here
                import traceback
                traceback.print_exc()
                fx["skipped"] = f"{type(e).__name__}: {e}"
                status = "skipped: " + fx["skipped"][:200]
            write(os.path.join(OUT_DIR, mn, f"{name}.json"), fx)
            summary[name] = status
            print(f"[{mn}] {name}: {status} ({time.time() - t:.1f}s)", flush=True)
        # index of every fixture of this model (scanned, so partial --only runs keep it complete)
        results = {}
        d = os.path.join(OUT_DIR, mn)
        for fn in sorted(os.listdir(d)):
            if fn.endswith(".json") and not fn.startswith("_"):
                with open(os.path.join(d, fn)) as f:
                    fx = json.load(f)
                results[fn[:-5]] = "skipped: " + fx["skipped"] if "skipped" in fx else "ok"
        write(os.path.join(d, "_index.json"), {"not_run": SKIPPED, "results": results})
        print(f"[{mn}] done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
