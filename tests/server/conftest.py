"""A `kvsqueeze serve` started per test module on a free loopback port, and the CLI to compare with.
The binary is build/kvsqueeze (KVSQ_BUILD_DIR), the models ../shared/models/stories260K.gguf and,
for tests marked default_model, the default model (KVSQ_DEFAULT_MODEL or scripts/get_model.sh)."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
STORIES = str(REPO.parent / "shared" / "models" / "stories260K.gguf")
CLI = str(REPO / os.environ.get("KVSQ_BUILD_DIR", "build") / "kvsqueeze")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model, *flags):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([CLI, "serve", "-m", model, "--port", str(self.port), "-t", "1", *flags],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc.poll() is None, f"the server exited: {self.proc.stderr.read()}"
            try:
                if self.get("/health")[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.05)
        raise AssertionError("the server did not become ready")

    def request(self, method, path, body=None, headers=None):
        """(status, parsed JSON or text) without raising on 4xx/5xx."""
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, text, ctype = r.status, r.read().decode(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            status, text, ctype = e.code, e.read().decode(), e.headers.get("Content-Type", "")
        return status, (json.loads(text) if "json" in ctype else text)

    def get(self, path, headers=None):
        return self.request("GET", path, headers=headers)

    def post(self, path, body, headers=None):
        return self.request("POST", path, body, headers)

    def metrics(self, headers=None):
        out = {}
        for line in self.get("/metrics", headers)[1].splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.proc.stderr.close()


@pytest.fixture(scope="module")
def server():
    assert os.path.isfile(CLI), f"{CLI} is not built"
    s = Server(STORIES, "--parallel", "4", "--max-tokens", "256", "--max-body", "1")
    yield s
    s.stop()


def generate_cli(model, prompt, n, *flags, chat=False):
    """What `kvsqueeze generate --json` answers greedily: the server must answer the same."""
    args = [CLI, "generate", "-m", model, "-p", prompt, "-n", str(n), "-t", "1", "--json", *flags]
    if chat:
        args.append("--chat")
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)["text"]
