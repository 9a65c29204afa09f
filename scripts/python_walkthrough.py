#!/usr/bin/env python3
"""Runs docs/PYTHON.md's walkthrough and writes it there, executed: the `# %%` cells of
python/walkthrough/walkthrough.py (markdown cells and code cells, jupytext's percent format) run in
one namespace, like a notebook; each code cell is written with what it printed (and the value of a
last bare expression) and its wall time, between the walkthrough markers of docs/PYTHON.md.

  scripts/python_walkthrough.py                 # default model; rewrites docs/PYTHON.md
  scripts/python_walkthrough.py --model M --output - # another model, markdown to stdout
Needs the kvsqueeze package installed (pip install .). Exits non-zero when a cell raises."""

import argparse
import ast
import contextlib
import io
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCE = REPO / "python" / "walkthrough" / "walkthrough.py"
DOC = REPO / "docs" / "PYTHON.md"
BEGIN, END = "<!-- walkthrough:begin -->", "<!-- walkthrough:end -->"


def cells(text: str):
    """(kind, source) per `# %%` cell; markdown cells lose their leading '# '."""
    kind, lines = None, []
    for line in text.splitlines() + ["# %%"]:
        if line.startswith("# %%"):
            if kind is not None and "".join(lines).strip():
                yield kind, "\n".join(lines).strip("\n")
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind == "markdown":
            lines.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
        else:
            lines.append(line)


def run_cell(source: str, namespace: dict) -> str:
    """Executes a cell; returns what it printed plus the repr of a last bare expression."""
    tree = ast.parse(source)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(tree, "<walkthrough>", "exec"), namespace)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<walkthrough>", "eval"), namespace)
            if value is not None:
                print(repr(value))
    return out.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="GGUF file (default: scripts/get_model.sh qwen2.5-0.5b-instruct)")
    ap.add_argument("--document", default=str(REPO / "data" / "demo" / "alice_chapter1.txt"))
    ap.add_argument("--output", default=str(DOC), help="docs/PYTHON.md (between its markers) or - for stdout")
    args = ap.parse_args()
    model = args.model or subprocess.run([str(REPO / "scripts" / "get_model.sh"), "qwen2.5-0.5b-instruct"],
                                         check=True, capture_output=True, text=True).stdout.strip()
    namespace = {"MODEL": model, "DOCUMENT": args.document, "__name__": "__walkthrough__"}
    parts, total = [], 0.0
    for kind, source in cells(SOURCE.read_text()):
        if kind == "markdown":
            parts.append(source)
            continue
        start = time.perf_counter()
        output = run_cell(source, namespace)
        seconds = time.perf_counter() - start
        total += seconds
        parts.append(f"```python\n{source}\n```")
        parts.append(f"```text\n{output.rstrip()}\n```\n<sub>{seconds:.1f} s</sub>" if output.strip() else f"<sub>{seconds:.1f} s</sub>")
        print(f"[walkthrough] cell done in {seconds:.1f} s", file=sys.stderr)
    import kvsqueeze
    parts.append(f"<sub>Executed {time.strftime('%Y-%m-%d')} with kvsqueeze {kvsqueeze.__version__} "
                 f"(kernels: {kvsqueeze.kernels_isa()}), {total:.0f} s in all, by `scripts/python_walkthrough.py`.</sub>")
    body = "\n\n".join(parts)
    if args.output == "-":
        print(body)
        return 0
    doc = pathlib.Path(args.output)
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    doc.write_text(f"{head}{BEGIN}\n{body}\n{END}{rest.split(END, 1)[1]}")
    print(f"[walkthrough] wrote {doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
