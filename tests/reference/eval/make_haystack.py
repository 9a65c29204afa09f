#!/usr/bin/env python3
"""Regenerates data/haystack.txt and the word lists data/words_*.txt.

Haystack: "Alice's Adventures in Wonderland" (Lewis Carroll, 1865; public domain), taken from the
Canterbury Corpus file alice29.txt (Project Gutenberg's Millennium Fulcrum Edition 2.9) that the
`brotli` source distribution on PyPI ships as tests/testdata/alice29.txt. See
data/HAYSTACK_PROVENANCE.md.

Word lists: the noun, adjective and verb lists of the `wonderwords` PyPI package (MIT), which
NVIDIA/RULER uses for its needle keys and common-word task; only ASCII entries are kept.

Usage: python make_haystack.py [--download-dir DIR]   (needs pip; downloads the two packages)
"""
import argparse
import hashlib
import io
import pathlib
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile

BROTLI = "brotli==1.2.1"
ALICE_MEMBER = "brotli-1.2.1/tests/testdata/alice29.txt"
ALICE_SHA256 = "7467306ee0feed4971260f3c87421154a05be571d944e9cb021a5713700c38f0"
WONDERWORDS = "wonderwords==3.0.1"
WORD_FILES = {"nounlist.txt": "words_nouns.txt", "adjectivelist.txt": "words_adjectives.txt",
              "verblist.txt": "words_verbs.txt"}

REPO = pathlib.Path(__file__).resolve().parents[3]


def pip_download(spec, dest, sdist):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), spec]
    if sdist:
        cmd[4:4] = ["--no-binary", ":all:"]
    subprocess.run(cmd, check=True)


def join_lines(lines):
    # A line that ends in a single hyphen was wrapped inside a hyphenated word ("sheep-\nbells").
    text = ""
    for line in lines:
        if text and not (text.endswith("-") and not text.endswith("--")):
            text += " "
        text += line
    return text


def clean_alice(raw: str) -> str:
    lines = raw.replace("\r\n", "\n").replace("\x1a", "").split("\n")
    # The text proper starts at the first chapter heading; the title block before it is dropped.
    start = next(i for i, line in enumerate(lines) if line.strip() == "CHAPTER I")
    paragraphs, current = [], []
    for line in lines[start:]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(current)
            current = []
    if current:
        paragraphs.append(current)
    out = []
    i = 0
    while i < len(paragraphs):
        para = paragraphs[i]
        text = join_lines(para)
        if re.fullmatch(r"CHAPTER [IVXL]+", text) and i + 1 < len(paragraphs):
            # "CHAPTER I" + "Down the Rabbit-Hole" -> one heading line that ends a sentence.
            title = join_lines(paragraphs[i + 1])
            out.append(f"Chapter {text.split()[1]}: {title}" + ("" if title[-1] in ".?!" else "."))
            i += 2
            continue
        if text == "THE END":
            break
        text = text.replace("`", "'")            # the etext opens quotes with a backtick
        text = re.sub(r"\s+", " ", text).strip()  # hard line wraps and double spaces
        text = text.replace("* * * * * * *", "").strip()
        if text.replace("*", "").strip():
            out.append(text)
        i += 1
    return "\n\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--download-dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dest = pathlib.Path(args.download_dir or tmp)
        pip_download(BROTLI, dest, sdist=True)
        pip_download(WONDERWORDS, dest, sdist=False)
        with tarfile.open(next(dest.glob("brotli-1.2.1.tar.gz"))) as tar:
            raw = tar.extractfile(ALICE_MEMBER).read()
        digest = hashlib.sha256(raw).hexdigest()
        if digest != ALICE_SHA256:
            sys.exit(f"alice29.txt has sha256 {digest}, expected {ALICE_SHA256}")
        text = clean_alice(raw.decode("ascii"))
        assert ")kvsq\"" not in text and text.isascii()
        (REPO / "data" / "haystack.txt").write_text(text)
        with zipfile.ZipFile(next(dest.glob("wonderwords-3.0.1-*.whl"))) as whl:
            for name, out_name in WORD_FILES.items():
                words = whl.read(f"wonderwords/assets/{name}").decode("utf-8").splitlines()
                words = [w.rstrip() for w in words if w.rstrip() and w.rstrip().isascii()]
                (REPO / "data" / out_name).write_text("\n".join(words) + "\n")
    print(f"data/haystack.txt: {len(text.split())} words, {len(text)} bytes")


if __name__ == "__main__":
    main()
