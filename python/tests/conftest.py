"""Models for the Python tests: stories260K (tiny, always) and the default model (marked
default_model; its path from KVSQ_DEFAULT_MODEL or scripts/get_model.sh)."""

import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
STORIES = REPO.parent / "shared" / "models" / "stories260K.gguf"
CONTEXT = ("Lily lived in a small house by the sea with her dog Max. Every morning they walked to the market, "
           "where the baker gave Max a bone. One day the baker was sick, so Lily baked bread for the whole town.")


@pytest.fixture(scope="session")
def stories():
    assert STORIES.is_file(), f"{STORIES} is missing"
    return str(STORIES)


@pytest.fixture(scope="session")
def default_model():
    path = os.environ.get("KVSQ_DEFAULT_MODEL")
    if not path:
        path = subprocess.run([str(REPO / "scripts" / "get_model.sh"), "qwen2.5-0.5b-instruct"], check=True,
                              capture_output=True, text=True).stdout.strip()
    assert os.path.isfile(path), f"default model {path} is missing"
    return path


@pytest.fixture(scope="session")
def cli():
    """The CLI built by scripts/test.sh (build/kvsqueeze), to compare answers with."""
    path = REPO / os.environ.get("KVSQ_BUILD_DIR", "build") / "kvsqueeze"
    if not path.is_file():
        pytest.skip(f"{path} is not built (scripts/setup.sh builds it)")
    return str(path)
