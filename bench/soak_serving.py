#!/usr/bin/env python3
"""Soak test of `kvsqueeze serve`: --minutes at saturation with a mixed workload, counting errors and
sampling the server's resident memory.

--clients threads (default: --parallel + 2, so requests always wait in the queue) send requests back
to back, each drawn (seeded) from:
  completion   non-streamed completion of a haystack slice (100..1500 tokens) under a random press
               (none, snapkv, expected_attention, knorm, streaming_llm; ratio 0.25..0.75), 8..48 tokens
  chat-doc     streamed chat about one of 3 documents (its context compressed with snapkv 0.5 and
               reused across questions: prompt-cache hits), 8..32 tokens
  decoding     completion compressed while decoding (kv_decode_interval 8, kv_decode_target 64)
  disconnect   a stream closed after 2 chunks (the server must free its sequence)
  bad          an unknown press: must be a 400 (counted apart; anything else is an error)
An error is any exception or status other than the expected one. RSS (VmRSS of the server) is
sampled every 5 s with the KV bytes the server holds (running sequences and cached contexts,
bounded by --kv-budget; kvsqueeze_kv_bytes_held); "flat" compares RSS minus those bytes, averaged
over the last minute, with its average over the minute after --warmup-minutes. Writes --json (rewritten every sample) and prints a summary. Exit 1 on errors.

Usage: bench/soak_serving.py [--model M] [--minutes 10] [--parallel 4] [--clients N] [--threads 2]
                             [--kv-budget MiB] [--seed 1] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_serving import Server, metrics_of, prompts  # noqa: E402
from bench_speed import DEFAULT_MODEL, REPO, BenchError, cpu_description, log, portable  # noqa: E402

PRESSES = ["none", "snapkv", "expected_attention", "knorm", "streaming_llm"]
KINDS = ["completion", "completion", "chat-doc", "chat-doc", "decoding", "disconnect", "bad"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", "-m", default=DEFAULT_MODEL)
    p.add_argument("--kvsqueeze", default=os.path.join(REPO, "build", "kvsqueeze"))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--warmup-minutes", type=float, default=2.0)
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--clients", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kv-budget", type=float, default=256.0, help="MiB")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    a.clients = a.clients or a.parallel + 2
    return a


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Soak:
    def __init__(self, a, server: Server):
        import openai
        self.openai = openai
        self.a = a
        self.server = server
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.errors: list[str] = []
        self.slices = prompts(64, 1500)
        self.docs = prompts(3, 600)

    def client(self, timeout=300):
        return self.openai.OpenAI(base_url=self.server.url + "/v1", api_key="none", max_retries=0, timeout=timeout)

    def one(self, rng: random.Random) -> None:
        kind = rng.choice(KINDS)
        c = self.client()
        try:
            if kind == "completion":
                text = rng.choice(self.slices)[: rng.randint(400, 6000)]
                press = rng.choice(PRESSES)
                extra = {} if press == "none" else {"kv_press": press, "kv_ratio": rng.choice([0.25, 0.5, 0.75])}
                r = c.completions.create(model="m", prompt=text, max_tokens=rng.randint(8, 48), temperature=0, extra_body=extra)
                assert r.usage.completion_tokens > 0
            elif kind == "chat-doc":
                doc = rng.choice(self.docs)
                q = rng.choice(["What is this about?", "Name one place.", "Summarise in a sentence.", "Who is mentioned?"])
                msgs = [{"role": "system", "content": "Answer from the document."}, {"role": "user", "content": doc},
                        {"role": "assistant", "content": "I have read it."}, {"role": "user", "content": q}]
                chunks = list(c.chat.completions.create(model="m", messages=msgs, max_tokens=rng.randint(8, 32), temperature=0.7,
                                                        seed=rng.randint(0, 1 << 30), stream=True,
                                                        extra_body={"kv_press": "snapkv", "kv_ratio": 0.5}))
                assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length")
            elif kind == "decoding":
                r = c.completions.create(model="m", prompt=rng.choice(self.slices)[:3000], max_tokens=40, temperature=0,
                                         extra_body={"kv_press": "knorm", "kv_ratio": 0.5, "kv_decode_interval": 8,
                                                     "kv_decode_target": 64, "ignore_eos": True})
                assert r.usage.completion_tokens == 40
            elif kind == "disconnect":
                stream = c.completions.create(model="m", prompt=rng.choice(self.slices)[:2000], max_tokens=200, temperature=0,
                                              stream=True, extra_body={"ignore_eos": True})
                for i, _ in enumerate(stream):
                    if i == 2:
                        break
                stream.close()
            elif kind == "bad":
                try:
                    c.completions.create(model="m", prompt="x", max_tokens=4, extra_body={"kv_press": "no_such_press"})
                    raise AssertionError("an unknown press was accepted")
                except self.openai.BadRequestError:
                    pass
        except Exception as e:  # noqa: BLE001 - every failure is counted, whatever it is
            with self.lock:
                self.errors.append(f"{kind}: {type(e).__name__}: {e}"[:300])
            return
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1

    def worker(self, seed: int, stop_at: float) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop_at:
            self.one(rng)


def main(argv=None) -> int:
    a = parse_args(argv)
    ctx = 2048
    server = Server([a.kvsqueeze, "serve", "-m", a.model, "--port", "0", "--parallel", str(a.parallel), "--threads", str(a.threads),
                     "--ctx-size", str(ctx), "--kv-budget", str(a.kv_budget)], None, "kvsqueeze serve")
    soak = Soak(a, server)
    t0 = time.monotonic()
    stop_at = t0 + 60 * a.minutes
    threads = [threading.Thread(target=soak.worker, args=(a.seed * 1000 + i, stop_at)) for i in range(a.clients)]
    for t in threads:
        t.start()
    samples = []
    report = {"config": {"model": portable(a.model), "minutes": a.minutes, "parallel": a.parallel, "clients": a.clients,
                         "threads": a.threads, "kv_budget_mib": a.kv_budget, "seed": a.seed, "cpu": cpu_description()}}
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(5)
            kib = rss_kib(server.proc.pid)
            try:
                m = metrics_of(server.url)
            except OSError:
                m = {}
            # RSS holds the mapped weights (paged in as used) and the KV bytes (running sequences and
            # cached contexts, bounded by the budget): what is left besides them must not grow.
            kv = (m.get("kvsqueeze_kv_bytes_held", 0.0)) / 1048576
            samples.append({"t_s": round(time.monotonic() - t0, 1), "rss_mib": round(kib / 1024, 1) if kib else None,
                            "kv_held_mib": round(kv, 1), "cached_contexts": m.get("kvsqueeze_cached_contexts"),
                            "rss_minus_kv_mib": round(kib / 1024 - kv, 1) if kib else None})
            with soak.lock:
                report.update(requests=dict(soak.counts), errors=list(soak.errors), rss=samples)
            if a.json:
                with open(a.json, "w") as f:
                    json.dump(report, f, indent=1)
            if len(samples) % 12 == 0:
                log(f"{samples[-1]['t_s']:.0f} s: {sum(soak.counts.values())} requests, {len(soak.errors)} errors, "
                    f"RSS {samples[-1]['rss_mib']} MiB")
        for t in threads:
            t.join()
        alive = server.proc.poll() is None and server.healthy()
        metrics = metrics_of(server.url)
    finally:
        server.stop()
    w0, w1 = 60 * a.warmup_minutes, 60 * (a.warmup_minutes + 1)
    after_warmup = [s["rss_minus_kv_mib"] for s in samples if w0 <= s["t_s"] < w1 and s["rss_minus_kv_mib"]]
    last = [s["rss_minus_kv_mib"] for s in samples if s["t_s"] >= samples[-1]["t_s"] - 60 and s["rss_minus_kv_mib"]]
    summary = {"requests": sum(soak.counts.values()), "errors": len(soak.errors), "server_alive_at_end": alive,
               "rss_minus_kv_mib_after_warmup": round(sum(after_warmup) / len(after_warmup), 1) if after_warmup else None,
               "rss_minus_kv_mib_last_minute": round(sum(last) / len(last), 1) if last else None,
               "rss_mib_max": max((s["rss_mib"] for s in samples if s["rss_mib"]), default=None),
               "metrics": {k: v for k, v in metrics.items() if k.startswith(("kvsqueeze_requests_total", "kvsqueeze_kv_bytes_held_peak",
                                                                            "kvsqueeze_kv_budget", "kvsqueeze_context_cache_hits",
                                                                            "kvsqueeze_generated_tokens", "kvsqueeze_decode_batch"))}}
    report.update(requests=dict(soak.counts), errors=soak.errors, rss=samples, summary=summary)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    print(json.dumps(summary, indent=1))
    return 0 if not soak.errors and alive else 1



if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"soak_serving.py: {e}", file=sys.stderr)
        sys.exit(2)
