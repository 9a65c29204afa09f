"""Errors become Python exceptions (never a crash); a Model is shared by engines on several
threads; Ctrl-C stops a long prefill cleanly."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import kvsqueeze
from conftest import CONTEXT


def test_missing_and_corrupt_files(stories, tmp_path):
    with pytest.raises(FileNotFoundError):
        kvsqueeze.Model.load(str(tmp_path / "missing.gguf"))
    data = open(stories, "rb").read()
    for name, blob in [("truncated.gguf", data[: len(data) // 3]), ("garbage.gguf", b"GGUF" + b"\xff" * 64),
                       ("empty.gguf", b"")]:
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(kvsqueeze.ModelError):
            kvsqueeze.Model.load(str(tmp_path / name))
    engine = kvsqueeze.Engine(kvsqueeze.Model.load(stories))
    with pytest.raises(FileNotFoundError):
        engine.load_prompt_cache(str(tmp_path / "missing.kvc"))


def test_bad_engine_settings(stories):
    model = kvsqueeze.Model.load(stories)
    with pytest.raises(ValueError):
        kvsqueeze.Engine(model, kv_type="f8")
    with pytest.raises(ValueError, match="type_k"):
        kvsqueeze.Engine(model, type_k="q5_1")
    with pytest.raises(ValueError, match="blocks of 32"):  # stories260K's heads have 8 channels
        kvsqueeze.Engine(model, kv_type="q8_0")
    with pytest.raises(ValueError, match="kv_rotation"):
        kvsqueeze.Engine(model, kv_rotation="sometimes")
    with pytest.raises(ValueError):
        kvsqueeze.Engine(model, chunk=0)
    engine = kvsqueeze.Engine(model, ctx_size=64)
    with pytest.raises(kvsqueeze.ContextFullError):
        engine.prefill_context(model.tokenize(CONTEXT * 3))
    with pytest.raises(ValueError, match="temperature"):
        engine.generate(model.tokenize("Hi"), temperature=-1.0)


def test_one_model_shared_by_threads(stories):
    model = kvsqueeze.Model.load(stories)
    pipe = kvsqueeze.pipeline(model=model)
    questions = ["\nWho baked bread?", "\nWhere did they walk?", "\nWho was sick?"]
    expected = [pipe(CONTEXT, question=q, press=kvsqueeze.KnormPress(0.3), max_new_tokens=12)["answer"] for q in questions]
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(3):
                results[i] = pipe(CONTEXT, question=questions[i], press=kvsqueeze.KnormPress(0.3), max_new_tokens=12)["answer"]
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and [results[i] for i in range(3)] == expected


def test_an_engine_used_by_two_threads_at_once_is_refused(stories):
    model = kvsqueeze.Model.load(stories)
    engine = kvsqueeze.Engine(model, ctx_size=512)
    ids = model.tokenize("Once upon a time")
    started, errors = threading.Event(), []

    def slow(piece):
        started.set()
        time.sleep(0.01)
        return True

    t = threading.Thread(target=lambda: engine.generate(ids, max_tokens=200, on_text=slow, ignore_eos=True))
    t.start()
    started.wait(10)
    try:
        engine.generate(ids, max_tokens=1)
    except RuntimeError as e:
        errors.append(e)
    engine.cancel()
    t.join()
    assert errors and "one Engine per thread" in str(errors[0])


def test_cancel_from_another_thread_stops_generation(stories):
    model = kvsqueeze.Model.load(stories)
    engine = kvsqueeze.Engine(model, ctx_size=512)
    timer = threading.Timer(0.2, engine.cancel)

    def slow(piece):
        time.sleep(0.005)
        return True

    timer.start()
    out = engine.generate(model.tokenize("Once upon a time"), max_tokens=400, on_text=slow, ignore_eos=True)
    assert out["stop_reason"] == "cancelled" and len(out["tokens"]) < 400


CHILD = r"""
import sys, time, kvsqueeze
model = kvsqueeze.Model.load(sys.argv[1])
engine = kvsqueeze.Engine(model, chunk=16, threads=1)
ids = model.tokenize(open(sys.argv[2]).read())[:6000]
print("tokens", len(ids), flush=True)
try:
    if sys.argv[3] == "prefill":
        engine.prefill_context(ids)
    else:  # a long generation, streamed through a Python callback
        engine.generate(ids[:64], max_tokens=5000, ignore_eos=True, on_text=lambda piece: True)
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
out = engine.generate(model.tokenize("Once"), max_tokens=3)
print("usable", len(out["tokens"]), flush=True)
"""


@pytest.mark.default_model
@pytest.mark.parametrize("stage", ["prefill", "generate"])
def test_ctrl_c_interrupts_a_long_prefill_or_generation(default_model, tmp_path, stage):
    doc = tmp_path / "doc.txt"
    doc.write_text(open(os.path.join(os.path.dirname(__file__), "..", "..", "data", "haystack.txt")).read())
    # A job started in the background (`cmd &` without job control, as some CI runners do) inherits
    # SIGINT ignored, and Python then installs no KeyboardInterrupt handler: give the child the
    # default disposition, as a terminal's Ctrl-C would find it.
    child = subprocess.Popen([sys.executable, "-c", CHILD, default_model, str(doc), stage], stdout=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert child.stdout.readline().startswith("tokens")
    time.sleep(1.0)
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=60)
    assert "interrupted" in out and "usable 3" in out, out
    assert time.monotonic() - sent < 10
