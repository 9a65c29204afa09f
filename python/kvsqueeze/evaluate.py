"""``kvsqueeze.evaluate``: the CLI's ``kvsqueeze eval`` from Python, returning its result rows."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Sequence

from . import _core
from .presses import BasePress


def _press_and_ratio(press: str | BasePress) -> tuple[str, float | None]:
    if isinstance(press, BasePress):
        plan = press.plan()
        if set(plan) != {"press", "ratio"}:
            raise ValueError(f"{type(press).__name__}: decoding-time presses are evaluated with decode_interval=... instead")
        return plan["press"], plan["ratio"]
    return str(press), None


def evaluate(kind: str, model: str, presses: Sequence[str | BasePress] = (), ratios: Sequence[float] = (), *,
             output_dir: str | None = None, as_frame: bool | None = None, **options: Any):
    """Evaluates presses x ratios on a task family, as ``kvsqueeze eval KIND`` does, and returns the
    result rows (one per sample and grid cell, the uncompressed baseline included): a pandas
    DataFrame when pandas is installed (``as_frame=False``: a list of dicts).

    kind: ``niah``, ``ruler``, ``longbench``, ``kld`` or ``ppl``. presses: expressions
    (``"snapkv"``, ``"adakv(expected_attention)"``) or press objects (a press object's own
    ``compression_ratio`` joins ``ratios``). Results are appended to ``output_dir/results.jsonl``
    and cells already there are skipped, so the same call resumes an interrupted run (without
    ``output_dir`` a temporary folder is used and nothing is kept). Options, as the CLI's flags:
    lengths, depths, tasks, samples, variant, needles, haystack_dir, qa_file, longbench_dir,
    datasets, limit, text_file, continuation, windows, chat, query_aware, every_chunk,
    decode_interval, decode_target, decode_ratio, ctx_size, chunk, threads, kv_type,
    reference_kv_type, seed, resume, report (write summary.md and plots there too).
    Bad settings raise ValueError with the engine's message before the model loads.
    """
    if not getattr(_core, "HAVE_EVALUATE", False):
        raise RuntimeError("this build of kvsqueeze has no evaluation suite: build it where cairo and ICU are installed "
                           "(Debian: libcairo2-dev libicu-dev libfontconfig-dev), then pip install . again")
    expressions, all_ratios = [], [float(r) for r in ratios]
    for p in presses:
        expression, ratio = _press_and_ratio(p)
        expressions.append(expression)
        if ratio and ratio not in all_ratios:
            all_ratios.append(ratio)
    temporary = None
    if output_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix=f"kvsqueeze-{kind}-")
        output_dir = temporary.name
    try:
        _core.evaluate(kind, os.fspath(model), os.fspath(output_dir), presses=expressions, ratios=all_ratios, **options)
        with open(os.path.join(output_dir, "results.jsonl"), encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    finally:
        if temporary is not None:
            temporary.cleanup()
    if as_frame is False:
        return rows
    try:
        import pandas
    except ImportError:
        if as_frame:
            raise
        return rows
    return pandas.json_normalize(rows)
