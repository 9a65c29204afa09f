"""kvpress's pipeline usage (its README; the AdaKV fork's head-specific example) on kvsqueeze,
changing only the imports and the model path."""

import json
import subprocess

import numpy as np
import pytest

from conftest import CONTEXT
from kvsqueeze import AdaKVPress, AdaSnapKVPress, ExpectedAttentionPress, KVCache, SnapKVPress, pipeline


@pytest.fixture(scope="module")
def pipe(stories):
    return pipeline("kv-press-text-generation", model=stories, device="cpu", torch_dtype="auto")


def test_readme_usage(pipe):
    # kvpress README: press = ExpectedAttentionPress(compression_ratio=0.4); pipe(context, question=, press=)["answer"]
    press = ExpectedAttentionPress(compression_ratio=0.4)
    answer = pipe(CONTEXT, question="\nWho baked bread?", press=press)["answer"]
    assert isinstance(answer, str) and answer
    answers = pipe(CONTEXT, questions=["\nWho baked bread?", "\nWhat did the baker give Max?"], press=press,
                   max_new_tokens=8)["answers"]
    assert len(answers) == 2 and answers[0].startswith(answer[: len(answers[0])][:5])


def test_no_press_equals_ratio_zero_and_compression_frees_memory(pipe):
    q = "\nWho baked bread?"
    full = KVCache()
    plain = pipe(CONTEXT, question=q, cache=full, max_new_tokens=12)["answer"]
    assert pipe(CONTEXT, question=q, press=SnapKVPress(compression_ratio=0.0), max_new_tokens=12)["answer"] == plain
    half = KVCache()
    pipe(CONTEXT, question=q, press=SnapKVPress(compression_ratio=0.5, window_size=8), cache=half, max_new_tokens=12)
    assert half.kv_bytes_held < full.kv_bytes_held
    assert (half.kv_lengths <= full.kv_lengths).all() and half.kv_lengths.sum() < full.kv_lengths.sum()
    assert half.compression_ratio == pytest.approx(0.5, abs=0.05)


def test_same_answers_as_the_cli(pipe, stories, cli):
    q = ["\nWho baked bread?", "\nWhere did they walk?"]
    got = pipe(CONTEXT, questions=q, press=SnapKVPress(0.5, window_size=8), max_new_tokens=16)["answers"]
    out = subprocess.run([cli, "generate", "-m", stories, "-p", CONTEXT, "-q", q[0], "-q", q[1], "--press",
                          "snapkv(window_size=8)", "--ratio", "0.5", "-n", "16", "--json"],
                         check=True, capture_output=True, text=True).stdout
    assert got == [a["text"] for a in json.loads(out)["answers"]]


def test_head_specific_compression_as_in_the_adakv_fork(pipe):
    # The fork's notebook: AdaSnapKVPress(), then compression_ratio and window_size set as attributes;
    # per-head lengths differ after compression and the overall ratio is the one asked for.
    ada_snapkv_press = AdaSnapKVPress()
    ada_snapkv_press.compression_ratio = 0.5
    ada_snapkv_press.window_size = 2
    without, with_press = KVCache(), KVCache()
    pipe(CONTEXT, question="\nWhat is the purpose?", cache=without, max_new_tokens=4)
    answer = pipe(CONTEXT, question="\nWhat is the purpose?", press=ada_snapkv_press, cache=with_press)["answer"]
    assert isinstance(answer, str)
    lens_without, lens_with = without.head_lens(0), with_press.head_lens(0)
    assert len(set(lens_without.tolist())) == 1  # every head holds the whole context
    assert len(set(with_press.kv_lengths.flatten().tolist())) > 1  # head-specific budgets
    ratio = 1 - with_press.kv_lengths.sum() / without.kv_lengths.sum()
    assert ratio == pytest.approx(0.5, abs=0.02)
    # kvpress's AdaKVPress (its own rule) as well.
    cache = KVCache()
    pipe(CONTEXT, question="\nWho?", press=AdaKVPress(SnapKVPress(0.5, window_size=4)), cache=cache, max_new_tokens=4)
    assert len(set(cache.kv_lengths.flatten().tolist())) > 1


def test_cache_arrays(pipe, stories):
    cache = KVCache()
    pipe(CONTEXT, question="\nWho?", press=SnapKVPress(0.5, window_size=8), cache=cache, max_new_tokens=4)
    model = pipe.model
    for head in range(cache.n_head_kv):
        k, v, pos = cache.keys(1, head), cache.values(1, head), cache.positions(1, head)
        n = cache.head_lens(1)[head]
        assert k.shape == (n, model.head_dim_k) and v.shape == (n, model.head_dim_v) and pos.shape == (n,)
        assert k.dtype == np.float16 and pos.dtype == np.int32  # zero-copy views of the f16 cache
        assert (np.diff(pos) > 0).all() and np.isfinite(k).all()
        assert not k.flags.writeable
    with pytest.raises(ValueError, match="layer"):
        cache.keys(model.n_layer, 0)
    before, last = cache.keys(0, 0).copy(), pipe.last_cache
    pipe(CONTEXT, question="\nWho?", max_new_tokens=2)  # the engine moves on
    np.testing.assert_array_equal(cache.keys(0, 0), before)  # a cache= object holds its context's runs
    with pytest.raises(RuntimeError, match="moved on"):  # last_cache reads from the engine lazily
        last.keys(0, 0)


def test_pipeline_argument_errors(pipe, stories):
    with pytest.raises(ValueError, match="not both"):
        pipe(CONTEXT, question="a", questions=["b"])
    with pytest.raises(ValueError, match="unknown task"):
        pipeline("text-generation", model=stories)
    with pytest.raises(ValueError):
        pipe(CONTEXT * 40, question="\nWho?")  # longer than the model's context


@pytest.mark.default_model
def test_default_model_answers_with_compression(default_model):
    pipe = pipeline("kv-press-text-generation", model=default_model, n_ctx=2048)
    context = CONTEXT + " Lily's favourite colour was green, like the door of her house."
    press = ExpectedAttentionPress(compression_ratio=0.4)
    answer = pipe(context, question="\nWho baked bread for the town? Answer with one name.", press=press,
                  max_new_tokens=12)["answer"]
    assert "Lily" in answer
    cache = KVCache()
    out = pipe(context, questions=["\nWhat is the dog's name? Answer with one word.", "\nWhat colour was the door?"],
               press=AdaKVPress(SnapKVPress(0.3, window_size=16)), cache=cache, max_new_tokens=12)["answers"]
    assert "Max" in out[0] and "green" in out[1].lower()
    assert cache.compression_ratio == pytest.approx(0.3, abs=0.02) and cache.kv_bytes_used < cache.kv_bytes_full
