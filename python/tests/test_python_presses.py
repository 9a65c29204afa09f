"""Presses written in Python (kvsqueeze.ScorerPress subclasses) run inside the native pipeline and
keep exactly the slots the same rule keeps in C++: knorm and snapkv re-written in a few lines of
numpy, alone, inside AdaKV (head-specific budgets) and while decoding; their errors surface as
Python exceptions and leave the pipeline usable."""

import numpy as np
import pytest

import kvsqueeze
from conftest import CONTEXT
from kvsqueeze import (AdaKVPress, DecodingPress, KnormPress, KVCache, PerLayerCompressionPress, ScorerPress, SnapKVPress,
                       pipeline)


class PyKnorm(ScorerPress):
    """Knorm in numpy: keys with a low L2 norm are kept."""

    def score(self, keys, values, positions, **stats):
        return -np.sqrt((keys.astype(np.float64) ** 2).sum(axis=1))


class PySnapKV(ScorerPress):
    """SnapKV in numpy: the attention of the last window_queries queries, pooled over kernel 5."""

    window_queries = 8

    def score(self, keys, values, positions, attention, **stats):
        w, n = attention.shape[1], len(positions) - attention.shape[1]
        if n <= 0:
            return np.full(len(positions), np.inf)
        a = attention[:, :, :n].astype(np.float64).mean(axis=1)  # group x n
        pooled = np.stack([np.convolve(x, np.ones(5), mode="same") / 5 for x in a]).mean(axis=0)
        return np.concatenate([pooled, np.full(w, np.inf)])


def kept(cache):
    return [[cache.positions(layer, head).tolist() for head in range(cache.n_head_kv)] for layer in range(cache.n_layer)]


def run(pipe, press, question="\nWho baked bread?", context=CONTEXT, **kw):
    cache = KVCache()
    answer = pipe(context, question=question, press=press, cache=cache, max_new_tokens=kw.pop("max_new_tokens", 8), **kw)
    return answer["answer"], kept(cache), cache


@pytest.fixture(scope="module")
def pipe(stories):
    return pipeline("kv-press-text-generation", model=stories)


@pytest.mark.parametrize("python_press, native_press", [
    (PyKnorm(0.5), KnormPress(0.5)),
    (PySnapKV(0.5), SnapKVPress(0.5, window_size=8)),
    (AdaKVPress(PyKnorm(0.5)), AdaKVPress(KnormPress(0.5))),
    (AdaKVPress(PySnapKV(0.6)), AdaKVPress(SnapKVPress(0.6, window_size=8))),
    (PerLayerCompressionPress(PyKnorm(), [0.2, 0.4, 0.6, 0.3, 0.5]), PerLayerCompressionPress(KnormPress(), [0.2, 0.4, 0.6, 0.3, 0.5])),
])
def test_python_press_keeps_what_the_native_press_keeps(pipe, python_press, native_press):
    got_answer, got_kept, got_cache = run(pipe, python_press)
    want_answer, want_kept, want_cache = run(pipe, native_press)
    assert got_kept == want_kept
    assert got_answer == want_answer
    assert got_cache.kv_bytes_held == want_cache.kv_bytes_held < run(pipe, None)[2].kv_bytes_held


def test_python_press_while_decoding(pipe):
    calls = []

    class CountingKnorm(PyKnorm):
        def score(self, keys, values, positions, **stats):
            calls.append(len(positions))
            return super().score(keys, values, positions, **stats)

    # The context (93 tokens) is left whole; every 4 generated tokens each head is cut back to 40.
    py = DecodingPress(base_press=CountingKnorm(), compression_interval=4, target_size=40)
    native = DecodingPress(base_press=KnormPress(), compression_interval=4, target_size=40)
    no_press = run(pipe, None, max_new_tokens=48)[0]
    got, want = run(pipe, py, max_new_tokens=48)[0], run(pipe, native, max_new_tokens=48)[0]
    assert got == want and got != no_press
    assert calls and min(calls) > 40  # called while decoding, on heads above the target


def test_score_sees_numpy_arrays_of_one_head(pipe, stories):
    seen = []

    class Probe(ScorerPress):
        window_queries = 4
        column_sums = True

        def score(self, keys, values, positions, **stats):
            seen.append((keys.shape, values.shape, positions.dtype, stats["layer"], stats["head"],
                         stats["attention"].shape, stats["column_sums"].shape, float(stats["attention"][:, -1].sum())))
            return np.arange(len(positions), dtype=np.float32)  # keeps the latest slots

    _, kept_sets, _ = run(pipe, Probe(0.5))
    model = pipe.model
    n = seen[0][0][0]
    group = model.n_head // model.n_head_kv
    assert len(seen) == model.n_layer * model.n_head_kv
    assert seen[0][:3] == ((n, model.head_dim_k), (n, model.head_dim_v), np.int32)
    assert sorted({(s[3], s[4]) for s in seen}) == [(l, h) for l in range(model.n_layer) for h in range(model.n_head_kv)]
    assert seen[0][5] == (group, 4, n) and seen[0][6] == (group, n)
    assert seen[0][7] == pytest.approx(group, rel=1e-4)  # each query's probabilities sum to 1
    assert kept_sets[0][0] == list(range(n - n // 2, n))


def test_errors_surface_as_python_exceptions_and_the_pipeline_goes_on(pipe):
    class Short(ScorerPress):
        def score(self, keys, values, positions, **stats):
            return np.zeros(len(positions) - 1)

    class Failing(ScorerPress):
        def score(self, keys, values, positions, **stats):
            raise ZeroDivisionError("my press failed")

    class Unfinished(ScorerPress):
        pass

    with pytest.raises(ValueError, match="returned .* scores for head 0 of layer 0"):
        run(pipe, Short(0.5))
    with pytest.raises(ZeroDivisionError, match="my press failed"):
        run(pipe, Failing(0.5))
    with pytest.raises(NotImplementedError, match="Unfinished must implement score"):
        run(pipe, Unfinished(0.5))
    with pytest.raises(ValueError, match="ratio"):
        PyKnorm(1.5)
    assert run(pipe, PyKnorm(0.5))[0] == run(pipe, KnormPress(0.5))[0]


@pytest.mark.default_model
def test_default_model_python_snapkv_equals_native(default_model):
    pipe = pipeline("kv-press-text-generation", model=default_model, n_ctx=2048)
    context = " ".join([CONTEXT] * 6)  # ~270 tokens
    got = run(pipe, AdaKVPress(PySnapKV(0.5)), question="Who baked bread?", context=context)
    want = run(pipe, AdaKVPress(SnapKVPress(0.5, window_size=8)), question="Who baked bread?", context=context)
    assert got[1] == want[1] and got[0] == want[0]
    assert len({len(h) for layer in got[1] for h in layer}) > 1  # head-specific budgets
