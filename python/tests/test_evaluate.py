"""kvsqueeze.evaluate: the CLI's `kvsqueeze eval` from Python, with the same results, resumable,
and errors as ValueError before any model work."""

import json
import os
import subprocess
import time

import pytest

import kvsqueeze
from kvsqueeze import SnapKVPress, _core

pytestmark = pytest.mark.skipif(not _core.HAVE_EVALUATE, reason="built without the evaluation suite (cairo, ICU)")


def cli_rows(cli, stories, out, *flags):
    subprocess.run([cli, "eval", *flags, "-m", stories, "-o", str(out), "--no-report"], check=True, capture_output=True)
    with open(out / "results.jsonl") as f:
        return [json.loads(line) for line in f]


def by_key(rows):
    return {r["key"]: r for r in rows}


def test_niah_rows_equal_the_clis_and_resume(tmp_path, stories, cli):
    out = tmp_path / "py"
    rows = kvsqueeze.evaluate("niah", stories, ["knorm", SnapKVPress(0.5, window_size=8)], [0.5], output_dir=str(out),
                              lengths=[256], depths=[20, 80], chat=False, threads=1, as_frame=False)
    assert {(r["press"], r["ratio"]) for r in rows} == {("none", 0.0), ("knorm", 0.5), ("snapkv(window_size=8)", 0.5)}
    assert len(rows) == 6  # 2 samples x 3 cells
    want = cli_rows(cli, stories, tmp_path / "cli", "niah", "--press", "knorm,snapkv(window_size=8)", "--ratio", "0.5",
                    "--lengths", "256", "--depths", "20,80", "--no-chat", "-t", "1")
    got, ref = by_key(rows), by_key(want)
    assert got.keys() == ref.keys()
    for key in got:
        for field in ("prediction", "metrics", "kv_bytes_held", "context_tokens"):
            assert got[key][field] == ref[key][field], (key, field)
    # The same call again: every cell is there already, nothing is recomputed.
    lines = (out / "results.jsonl").read_text().count("\n")
    t0 = time.monotonic()
    again = kvsqueeze.evaluate("niah", stories, ["knorm", SnapKVPress(0.5, window_size=8)], [0.5], output_dir=str(out),
                               lengths=[256], depths=[20, 80], chat=False, threads=1, as_frame=False)
    assert again == rows and (out / "results.jsonl").read_text().count("\n") == lines
    assert time.monotonic() - t0 < 30


def test_kld_and_data_frame(tmp_path, stories):
    pandas = pytest.importorskip("pandas")
    frame = kvsqueeze.evaluate("kld", stories, ["streaming_llm"], [0.5], output_dir=str(tmp_path), lengths=[96],
                               continuation=16, samples=1, threads=1, report=True)
    assert isinstance(frame, pandas.DataFrame) and len(frame) == 2
    assert set(frame["press"]) == {"none", "streaming_llm"} and (frame["kind"] == "kld").all()
    assert os.path.isfile(tmp_path / "summary.md")


def test_errors_before_the_model_loads(tmp_path, stories):
    with pytest.raises(ValueError, match="unknown press 'no_such'"):
        kvsqueeze.evaluate("niah", "/nonexistent.gguf", ["no_such"], [0.5], output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="kind"):
        kvsqueeze.evaluate("mmlu", stories, ["knorm"], [0.5], output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="ratio"):
        kvsqueeze.evaluate("niah", stories, ["knorm"], [1.5], output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="windows"):
        kvsqueeze.evaluate("kld", stories, ["knorm"], [0.5], output_dir=str(tmp_path), windows="random")
    with pytest.raises(FileNotFoundError):
        kvsqueeze.evaluate("niah", str(tmp_path / "missing.gguf"), ["knorm"], [0.5], output_dir=str(tmp_path), lengths=[64])
    assert not (tmp_path / "results.jsonl").exists()
