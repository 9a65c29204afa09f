#!/usr/bin/env python3
"""Serving benchmark: `kvsqueeze serve` and llama.cpp's `llama-server` side by side, on the same GGUF.

For every number of concurrent streams N in --streams (default 1,2,4,8,16), each server is started
with N sequences in parallel (kvsqueeze: --parallel N; llama-server: -np N, continuous batching on),
warmed up with one request, then N clients send at once one streamed completion each: a distinct
prompt of about --prompt-tokens tokens (slices of data/haystack.txt), --max-tokens generated with
temperature 0 and ignore_eos (every stream generates exactly max_tokens). Per N and server:
  decode tok/s   aggregate: the sum over streams of (tokens - 1) / (last token - first token time)
  output tok/s   all generated tokens / (last stream's end - first request's start), prefill included
  TTFT p50/p99   request sent -> first text chunk (includes waiting for the other prompts' prefill)
  ITL p50/p99    gaps between a stream's consecutive text chunks
The servers run one at a time (the order flips every N), each with --threads threads. Token counts
come from each response's usage (stream_options.include_usage). The report gives kvsqueeze's
aggregate decode tok/s at N as a multiple of its own at 1 stream and of llama-server's at N.

Capacity (--capacity): how many concurrent document sessions a KV budget holds. For each ratio of
--capacity-ratios, `kvsqueeze serve --kv-budget MiB --parallel 64 --cached-contexts 1` gets
--sessions chat requests at once about one document of --doc-tokens tokens (its compressed context
is reused: the first request prefills it, the others start from the copy), each a question of its
own and --capacity-tokens tokens. /metrics is polled every 0.25 s: the peak of running sequences
and of KV bytes held (never above the budget), and the aggregate decode tok/s of the streams.

Usage:
  bench/bench_serving.py --capacity [--kv-budget 256] [--doc-tokens 8192] [--capacity-ratios 0,0.5,0.75]
                         [--sessions 16] [--capacity-tokens 32] [--capacity-press expected_attention]
  bench/bench_serving.py [--model M.gguf] [--kvsqueeze build/kvsqueeze] [--llamacpp-bin DIR]
                         [--streams 1,2,4,8,16] [--prompt-tokens 256] [--max-tokens 64] [--threads 2]
                         [--press none --ratio 0] [--skip-llamacpp] [--json OUT.json] [--markdown OUT.md]
llama-server comes from bench/build_llamacpp.sh. Needs the `openai` package (the project's venv).
--json is rewritten after every measurement. Exit status: 0 ok, 1 a measurement failed, 2 bad
usage / missing binary or model.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_speed import (DEFAULT_LLAMACPP_BIN, DEFAULT_MODEL, REPO, BenchError, cpu_description,  # noqa: E402
                         llamacpp_version, log, portable)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", "-m", default=DEFAULT_MODEL)
    p.add_argument("--kvsqueeze", default=os.path.join(REPO, "build", "kvsqueeze"))
    p.add_argument("--llamacpp-bin", default=DEFAULT_LLAMACPP_BIN)
    p.add_argument("--streams", default="1,2,4,8,16")
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--press", default="none", help="kvsqueeze's press for every request")
    p.add_argument("--ratio", type=float, default=0.0)
    p.add_argument("--skip-llamacpp", action="store_true")
    p.add_argument("--capacity", action="store_true")
    p.add_argument("--kv-budget", type=float, default=256.0)
    p.add_argument("--doc-tokens", type=int, default=8192)
    p.add_argument("--capacity-ratios", default="0,0.5,0.75")
    p.add_argument("--sessions", type=int, default=16)
    p.add_argument("--capacity-tokens", type=int, default=32)
    p.add_argument("--capacity-press", default="expected_attention")
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    a = p.parse_args(argv)
    try:
        a.streams = [int(x) for x in a.streams.split(",") if x]
    except ValueError:
        p.error("--streams: comma-separated integers")
    if not a.streams or min(a.streams) < 1:
        p.error("--streams: positive integers")
    return a


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process on a loopback port, ready once GET /health answers 200."""

    def __init__(self, cmd: list[str], port: int | None, name: str):
        self.name = name
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log, text=True)
        self.port = port
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{name} exited with {self.proc.returncode}: {self.tail()}")
            if self.port is None:  # kvsqueeze --port 0 says which port on stderr
                self.log.seek(0)
                m = re.search(r"listening on http://[^:]+:(\d+)", self.log.read())
                if m:
                    self.port = int(m.group(1))
            if self.port is not None and self.healthy():
                return
            time.sleep(0.2)
        self.stop()
        raise BenchError(f"{name} did not become ready in 300 s: {self.tail()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def tail(self) -> str:
        self.log.seek(0)
        return " | ".join(self.log.read().strip().splitlines()[-3:])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_kvsqueeze(a, n: int) -> Server:
    ctx = a.prompt_tokens * 2 + a.max_tokens + 64
    return Server([a.kvsqueeze, "serve", "-m", a.model, "--port", "0", "--parallel", str(n), "--threads", str(a.threads),
                   "--ctx-size", str(ctx), "--queue", str(max(64, n)), "--press", a.press, "--ratio", str(a.ratio),
                   "--cached-contexts", "0"], None, "kvsqueeze serve")


def start_llamacpp(a, n: int) -> Server:
    ctx = a.prompt_tokens * 2 + a.max_tokens + 64
    port = free_port()
    return Server([os.path.join(a.llamacpp_bin, "llama-server"), "-m", a.model, "--host", "127.0.0.1", "--port", str(port),
                   "-np", str(n), "-c", str(ctx * n), "-t", str(a.threads), "-tb", str(a.threads), "--no-webui",
                   "--cache-ram", "0"], port, "llama-server")


def prompts(n: int, tokens: int) -> list[str]:
    with open(os.path.join(REPO, "data", "haystack.txt"), encoding="utf-8") as f:
        text = " ".join(f.read().split())
    size = tokens * 4  # about 4 characters per token in this English text
    step = max(1, (len(text) - size) // max(1, n))
    return [text[i * step: i * step + size] for i in range(n)]


def one_stream(url: str, prompt: str, max_tokens: int) -> dict:
    import openai  # the project's venv has it; imported here so that --help works without it
    c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    t0 = time.monotonic()
    times: list[float] = []
    usage = None
    for ch in c.completions.create(model="m", prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True,
                                   stream_options={"include_usage": True}, extra_body={"ignore_eos": True}):
        if ch.choices and ch.choices[0].text:
            times.append(time.monotonic())
        if ch.usage is not None:
            usage = ch.usage
    t1 = time.monotonic()
    if not times or usage is None:
        raise BenchError(f"a stream ended without text or usage ({len(times)} chunks)")
    return {"start": t0, "end": t1, "chunks": times, "tokens": usage.completion_tokens}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q * (len(v) - 1))))]


def run_level(server: Server, n: int, a) -> dict:
    one_stream(server.url, prompts(1, a.prompt_tokens)[0][:200], 8)  # warm-up
    ps = prompts(n, a.prompt_tokens)
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        streams = list(pool.map(lambda p: one_stream(server.url, p, a.max_tokens), ps))
    bad = [s["tokens"] for s in streams if s["tokens"] != a.max_tokens]
    if bad:
        raise BenchError(f"{server.name}: streams generated {bad} tokens, not {a.max_tokens}")
    decode = sum((s["tokens"] - 1) / (s["chunks"][-1] - s["chunks"][0]) for s in streams if len(s["chunks"]) > 1)
    total = sum(s["tokens"] for s in streams)
    start, end = min(s["start"] for s in streams), max(s["end"] for s in streams)
    ttft = [s["chunks"][0] - s["start"] for s in streams]
    itl = [b - a_ for s in streams for a_, b in zip(s["chunks"], s["chunks"][1:])]
    return {"streams": n, "decode_tok_s": round(decode, 2), "output_tok_s": round(total / (end - start), 2),
            "ttft_p50_ms": round(1000 * percentile(ttft, 0.5), 1), "ttft_p99_ms": round(1000 * percentile(ttft, 0.99), 1),
            "itl_p50_ms": round(1000 * percentile(itl, 0.5), 1), "itl_p99_ms": round(1000 * percentile(itl, 0.99), 1),
            "wall_s": round(end - start, 2)}


def metrics_of(url: str) -> dict:
    out = {}
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
    return out


def one_chat(url: str, messages: list, max_tokens: int, extra: dict) -> dict:
    import openai
    c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=3600)
    t0 = time.monotonic()
    times, usage = [], None
    for ch in c.chat.completions.create(model="m", messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
                                        stream_options={"include_usage": True}, extra_body={"ignore_eos": True, **extra}):
        if ch.choices and ch.choices[0].delta.content:
            times.append(time.monotonic())
        if ch.usage is not None:
            usage = ch.usage
    return {"start": t0, "chunks": times, "tokens": usage.completion_tokens if usage else 0,
            "cached": usage.prompt_tokens_details.cached_tokens if usage and usage.prompt_tokens_details else 0}


def run_capacity(a) -> list[dict]:
    doc = prompts(1, a.doc_tokens)[0]
    rows = []
    for ratio in [float(r) for r in a.capacity_ratios.split(",")]:
        log(f"capacity at ratio {ratio}: {a.sessions} sessions, budget {a.kv_budget} MiB")
        server = Server([a.kvsqueeze, "serve", "-m", a.model, "--port", "0", "--parallel", "64", "--threads", str(a.threads),
                         "--ctx-size", str(a.doc_tokens + 512), "--kv-budget", str(a.kv_budget), "--cached-contexts", "1",
                         "--queue", str(max(64, a.sessions))], None, "kvsqueeze serve")
        try:
            extra = {} if ratio == 0 else {"kv_press": a.capacity_press, "kv_ratio": ratio}
            msgs = [[{"role": "system", "content": "Answer from the document."}, {"role": "user", "content": doc},
                     {"role": "assistant", "content": "I have read it."}, {"role": "user", "content": f"Question {i}: what is said first?"}]
                    for i in range(a.sessions)]
            peak = {"running": 0.0, "held": 0.0}
            done = threading.Event()

            def poll():
                while not done.is_set():
                    m = metrics_of(server.url)
                    peak["running"] = max(peak["running"], m.get("kvsqueeze_running_sequences", 0.0))
                    peak["held"] = max(peak["held"], m.get("kvsqueeze_kv_bytes_held", 0.0))
                    time.sleep(0.25)

            poller = threading.Thread(target=poll)
            poller.start()
            t0 = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(a.sessions) as pool:
                streams = list(pool.map(lambda m: one_chat(server.url, m, a.capacity_tokens, extra), msgs))
            done.set()
            poller.join()
            m = metrics_of(server.url)
        finally:
            server.stop()
        decode = sum((s["tokens"] - 1) / (s["chunks"][-1] - s["chunks"][0]) for s in streams if len(s["chunks"]) > 1)
        row = {"ratio": ratio, "sessions": a.sessions, "peak_running": int(peak["running"]),
               "peak_kv_held_mib": round(max(peak["held"], m.get("kvsqueeze_kv_bytes_held_peak", 0.0)) / 1048576, 1),
               "budget_mib": a.kv_budget, "cached_tokens_served": sum(s["cached"] for s in streams),
               "decode_tok_s": round(decode, 2), "wall_s": round(time.monotonic() - t0, 1)}
        log(json.dumps(row))
        rows.append(row)
    return rows


def markdown(report: dict) -> str:
    rows = ["| streams | server | decode tok/s (aggregate) | output tok/s | TTFT p50 / p99 ms | ITL p50 / p99 ms | "
            "kvsqueeze vs its 1 stream | kvsqueeze vs llama-server |", "|---|---|---|---|---|---|---|---|"]
    ours = {r["streams"]: r for r in report["results"] if r["server"] == "kvsqueeze"}
    theirs = {r["streams"]: r for r in report["results"] if r["server"] == "llama-server"}
    base = ours.get(1, {}).get("decode_tok_s")
    for n in report["config"]["streams"]:
        for name, table in (("kvsqueeze", ours), ("llama-server", theirs)):
            r = table.get(n)
            if not r:
                continue
            vs1 = vs_l = ""
            if name == "kvsqueeze":
                vs1 = f"{r['decode_tok_s'] / base:.2f}x" if base else ""
                vs_l = f"{r['decode_tok_s'] / theirs[n]['decode_tok_s']:.2f}x" if n in theirs else ""
            rows.append(f"| {n} | {name} | {r['decode_tok_s']:.1f} | {r['output_tok_s']:.1f} | {r['ttft_p50_ms']:.0f} / "
                        f"{r['ttft_p99_ms']:.0f} | {r['itl_p50_ms']:.1f} / {r['itl_p99_ms']:.1f} | {vs1} | {vs_l} |")
    c = report["config"]
    head = (f"{c['cpu']}, {c['threads']} threads; {os.path.basename(c['model'])}; prompts of ~{c['prompt_tokens']} tokens, "
            f"{c['max_tokens']} generated per stream (greedy, ignore_eos); kvsqueeze press {c['press']} at {c['ratio']}; "
            f"llama.cpp {c.get('llamacpp', 'not run')}")
    return head + "\n\n" + "\n".join(rows) + "\n"


def main(argv=None) -> int:
    a = parse_args(argv)
    for path, what in ((a.model, "model"), (a.kvsqueeze, "kvsqueeze binary")):
        if not os.path.exists(path):
            print(f"bench_serving.py: {what} not found: {path}", file=sys.stderr)
            return 2
    if not a.skip_llamacpp and not os.path.exists(os.path.join(a.llamacpp_bin, "llama-server")):
        print(f"bench_serving.py: no llama-server in {a.llamacpp_bin} (bench/build_llamacpp.sh builds it)", file=sys.stderr)
        return 2
    if a.capacity:
        rows = run_capacity(a)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"cpu": cpu_description(), "model": portable(a.model), "doc_tokens": a.doc_tokens, "press": a.capacity_press,
                           "rows": rows}, f, indent=1)
        print("| ratio | sessions sent | peak concurrent | peak KV held MiB / budget | aggregate decode tok/s | wall s |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['ratio']} | {r['sessions']} | {r['peak_running']} | {r['peak_kv_held_mib']} / {r['budget_mib']:.0f} | "
                  f"{r['decode_tok_s']} | {r['wall_s']} |")
        return 0
    report = {"config": {"model": portable(a.model), "streams": a.streams, "prompt_tokens": a.prompt_tokens, "max_tokens": a.max_tokens,
                         "threads": a.threads, "press": a.press, "ratio": a.ratio, "cpu": cpu_description()},
              "results": []}
    if not a.skip_llamacpp:
        report["config"]["llamacpp"] = llamacpp_version(a.llamacpp_bin)
    engines = [("kvsqueeze", start_kvsqueeze)] + ([] if a.skip_llamacpp else [("llama-server", start_llamacpp)])
    status = 0
    for i, n in enumerate(a.streams):
        for name, start in (engines if i % 2 == 0 else engines[::-1]):
            log(f"{name}: {n} stream(s)")
            try:
                server = start(a, n)
                try:
                    r = run_level(server, n, a)
                finally:
                    server.stop()
            except BenchError as e:
                log(f"{name} at {n} streams failed: {e}")
                status = 1
                continue
            r["server"] = name
            report["results"].append(r)
            log(json.dumps(r))
            if a.json:
                with open(a.json, "w") as f:
                    json.dump(report, f, indent=1)
    text = markdown(report)
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
