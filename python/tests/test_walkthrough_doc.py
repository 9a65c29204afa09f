"""docs/PYTHON.md's walkthrough is the executed form of python/walkthrough/walkthrough.py: every
code cell appears there as it is now, each followed by its recorded wall time (re-run
scripts/python_walkthrough.py after changing a cell)."""

import importlib.util
import re

from conftest import REPO


def load_runner():
    spec = importlib.util.spec_from_file_location("python_walkthrough", REPO / "scripts" / "python_walkthrough.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    return runner


def test_doc_shows_the_current_cells_executed():
    runner = load_runner()
    doc = runner.DOC.read_text()
    section = doc.split(runner.BEGIN, 1)[1].split(runner.END, 1)[0]
    code = [source for kind, source in runner.cells(runner.SOURCE.read_text()) if kind == "code"]
    shown = re.findall(r"```python\n(.*?)\n```\n\n(?:```text\n.*?\n```\n)?<sub>[0-9.]+ s</sub>", section, re.S)
    assert shown == code, "docs/PYTHON.md's walkthrough is stale: run scripts/python_walkthrough.py"
    assert "Executed " in section


def test_cells_split_like_jupytext():
    runner = load_runner()
    parsed = list(runner.cells("# %% [markdown]\n# Title\n#\n# text\n\n# %%\nx = 1\nx\n\n# %%\n\n"))
    assert parsed == [("markdown", "Title\n\ntext"), ("code", "x = 1\nx")]
    namespace = {}
    assert runner.run_cell("x = 2\nprint('p')\nx * 3", namespace) == "p\n6\n"
    assert runner.run_cell("y = x", namespace) == "" and namespace["y"] == 2
