"""The cache as numpy: zero-copy read-only views of the engine's own memory (f16 -> float16, f32 ->
float32, positions int32) that stay valid and unchanged while the engine writes, moves on or is
gone; decoded float32 copies for the types numpy cannot hold."""

import gc

import numpy as np
import pytest

import kvsqueeze
from conftest import CONTEXT


@pytest.fixture(scope="module")
def model(stories):
    return kvsqueeze.Model.load(stories)


def prefilled(model, **engine_args):
    engine = kvsqueeze.Engine(model, ctx_size=512, **engine_args)
    engine.prefill_context(engine.context_ids(CONTEXT))
    return engine


def every_view(engine, model):
    return [part(layer, head) for layer in range(model.n_layer) for head in range(model.n_head_kv)
            for part in (engine.cache_keys, engine.cache_values, engine.cache_positions)]


def test_views_are_the_cache_memory(model):
    engine = prefilled(model)
    for part, dtype in ((engine.cache_keys, np.float16), (engine.cache_values, np.float16), (engine.cache_positions, np.int32)):
        a = part(1, 0)
        assert a.dtype == dtype and not a.flags.writeable
        assert np.shares_memory(a, part(1, 0))  # the same memory twice: no copy was made
        with pytest.raises(ValueError):
            a[0] = 0
    f32 = prefilled(model, kv_type="f32")
    k32 = f32.cache_keys(0, 1)
    assert k32.dtype == np.float32 and np.shares_memory(k32, f32.cache_keys(0, 1))
    # Layer 0's keys do not depend on the cache type: the f16 view holds them rounded to f16.
    np.testing.assert_allclose(engine.cache_keys(0, 1).astype(np.float32), k32, rtol=1e-3, atol=1e-6)
    assert engine.cache_keys(0, 1).shape == (len(engine.context_ids(CONTEXT)), model.head_dim_k)


def answered(model, **engine_args):
    """An engine whose runs already have room for a question and its answer (the first answer grows
    them), so that later answers write into the same memory."""
    engine = prefilled(model, **engine_args)
    engine.answer(engine.question_ids(CONTEXT, "\nWho baked bread?"), max_tokens=4)
    return engine


def test_views_outlive_writes_and_the_engine(model):
    engine, twin = answered(model), answered(model)
    views = every_view(engine, model)
    saved = [v.copy() for v in views]
    # An answer appends the question and its tokens, then rolls the context back: the runs are
    # truncated and written again, so the engine copies each viewed run first.
    for e in (engine, twin):
        e.answer(e.question_ids(CONTEXT, "\nWho baked bread?"), max_tokens=4)
    assert all(np.array_equal(v, s) for v, s in zip(views, saved))
    assert not np.shares_memory(views[0], engine.cache_keys(0, 0))
    # The views' memory is theirs: the engine holds what an engine without views holds.
    assert engine.accounting()["kv_bytes_held"] == twin.accounting()["kv_bytes_held"]
    # A new, compressed context, then no engine at all.
    engine.set_plan("knorm", 0.5)
    engine.prefill_context(engine.context_ids(CONTEXT + " The end."))
    del engine
    gc.collect()
    assert all(np.array_equal(v, s) for v, s in zip(views, saved))


def test_no_copy_without_views(model):
    engine = answered(model)
    keys = engine.cache_keys(2, 0)
    address = keys.__array_interface__["data"][0]
    del keys
    gc.collect()
    engine.answer(engine.question_ids(CONTEXT, "\nWho?"), max_tokens=2)  # rolled back in place
    assert engine.cache_keys(2, 0).__array_interface__["data"][0] == address
    # While a view lives, the same answer moves the run to new memory.
    keys = engine.cache_keys(2, 0)
    engine.answer(engine.question_ids(CONTEXT, "\nWho?"), max_tokens=2)
    assert engine.cache_keys(2, 0).__array_interface__["data"][0] != address


def test_other_types_are_decoded_copies(model):
    f32 = prefilled(model, kv_type="f32")
    bf16 = prefilled(model, kv_type="bf16")
    k = bf16.cache_keys(0, 0)
    assert k.dtype == np.float32 and not k.flags.writeable
    assert not np.shares_memory(k, bf16.cache_keys(0, 0))
    np.testing.assert_allclose(k, f32.cache_keys(0, 0), rtol=8e-3, atol=1e-6)
    assert np.shares_memory(bf16.cache_positions(0, 0), bf16.cache_positions(0, 0))


def test_snapshot_holds_every_run(model):
    for kv_type in ("f16", "bf16"):  # views, and copies decoded from the held runs when asked
        engine = answered(model, kv_type=kv_type)
        snapshot = engine.cache_snapshot()
        runs = [(layer, head) for layer in range(model.n_layer) for head in range(model.n_head_kv)]
        saved = [(engine.cache_keys(*r), engine.cache_values(*r), engine.cache_positions(*r)) for r in runs]
        saved = [tuple(a.copy() for a in arrays) for arrays in saved]
        engine.answer(engine.question_ids(CONTEXT, "\nWho?"), max_tokens=2)
        engine.set_plan("knorm", 0.5)
        engine.prefill_context(engine.context_ids(CONTEXT + " The end."))
        del engine
        gc.collect()
        for r, (k, v, p) in zip(runs, saved):
            np.testing.assert_array_equal(snapshot.keys(*r), k)
            np.testing.assert_array_equal(snapshot.values(*r), v)
            np.testing.assert_array_equal(snapshot.positions(*r), p)
        with pytest.raises(ValueError, match="head"):
            snapshot.keys(0, model.n_head_kv)
