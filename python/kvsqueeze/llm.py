"""``kvsqueeze.LLM``: llama-cpp-python's ``Llama`` shape on the native engine, with a compressed
KV cache. ``llm(prompt)`` / ``create_completion`` and ``create_chat_completion`` return
OpenAI-shaped dicts (or iterators of chunks with ``stream=True``); ``save_state()`` /
``load_state()`` keep a (compressed) prompt cache."""

from __future__ import annotations

import os
import queue
import random
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

from . import _core
from .cache import KVCache
from .decoding_presses import validate_press
from .presses import BasePress

_FINISH = {"max_tokens": "length", "context_full": "length"}


@dataclass(frozen=True)
class LLMState:
    """A saved prompt cache: the cache file's bytes and the tokens it holds."""

    data: bytes
    tokens: tuple

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


class LLM:
    """A model with one sequence, as llama-cpp-python's ``Llama``.

    Parameters
    ----------
    model_path : str
        GGUF file.
    n_ctx : int, default 0
        Context size in tokens (0: the model's trained context).
    n_threads : int, default 0
        Threads (0: one per core).
    kv_type : str, default "f16"
        KV cache type of keys and values: f16, bf16, f32, q8_0 or q4_0.
    type_k, type_v : str, optional
        The keys' or the values' own KV cache type (llama.cpp's cache-type-k / cache-type-v).
    kv_rotation : str, default "auto"
        Store keys and values Walsh-Hadamard rotated: auto (quantized types), on or off.
    kv_centering : str, default "auto"
        Store keys centred (a per-channel offset taken off, exact for attention): auto (quantized keys), on or off.
    n_batch : int, default 512
        Prefill chunk in tokens.
    press : press, optional
        Compresses every prompt (the prompt is the context), e.g. ``SnapKVPress(0.5)``.
    seed : int, optional
        Sampling seed (default: a random one per call).
    """

    def __init__(self, model_path: str, n_ctx: int = 0, n_threads: int = 0, kv_type: str = "f16", n_batch: int = 512,
                 press: BasePress | None = None, type_k: str | None = None, type_v: str | None = None,
                 kv_rotation: str = "auto", kv_centering: str = "auto", seed: int | None = None, verbose: bool = False, **kwargs: Any) -> None:
        self.model_path = str(model_path)
        self.model = _core.Model.load(self.model_path)
        self._engine = _core.Engine(self.model, ctx_size=n_ctx, threads=n_threads, kv_type=kv_type,
                                    type_k=type_k, type_v=type_v, kv_rotation=kv_rotation,
                                    kv_centering=kv_centering, chunk=n_batch)
        self._engine._kvsq_epoch = 0
        self.press = press
        self.seed = seed
        self.verbose = verbose
        self._fresh: list[int] | None = None  # tokens of a context just prefilled or loaded, not yet continued

    # --- tokens
    def tokenize(self, text: bytes | str, add_bos: bool = True, special: bool = False) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self.model.tokenize(text, add_bos=add_bos and self.model.add_bos, special=special)

    def detokenize(self, tokens: list[int], special: bool = False) -> bytes:
        return self.model.detokenize(list(tokens), skip_special=not special).encode("utf-8")

    def n_ctx(self) -> int:
        return self._engine.ctx_size

    # --- the context
    def eval(self, tokens: list[int] | str, press: BasePress | None = None) -> None:
        """Prefills ``tokens`` (or a text) as the context, compressed by ``press`` (default: the
        LLM's); a later completion of a prompt starting with them continues from this cache."""
        ids = self.tokenize(tokens, special=True) if isinstance(tokens, str) else list(tokens)
        self._engine.set_plan(**validate_press(press if press is not None else self.press))
        self._engine._kvsq_epoch += 1
        self._engine.prefill_context(ids)
        self._fresh = ids

    def save_state(self) -> LLMState:
        """The current context's (compressed) cache, after ``eval`` or ``load_state``."""
        if self._fresh is None:
            raise RuntimeError("no context to save: call eval(prompt) (or load_state) first; a completion moves past it")
        fd, path = tempfile.mkstemp(suffix=".kvc")
        os.close(fd)
        try:
            self._engine.save_prompt_cache(path)
            with open(path, "rb") as f:
                return LLMState(f.read(), tuple(self._fresh))
        finally:
            os.unlink(path)

    def load_state(self, state: LLMState) -> None:
        """Makes a saved cache the context (the model must be the one that saved it)."""
        fd, path = tempfile.mkstemp(suffix=".kvc")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(state.data)
            self._engine._kvsq_epoch += 1
            self._fresh = list(self._engine.load_prompt_cache(path))
        finally:
            os.unlink(path)

    def save_cache_file(self, path: str) -> None:
        """Saves the current context's cache to a file (the CLI's --save-cache format)."""
        self._engine.save_prompt_cache(str(path))

    def load_cache_file(self, path: str) -> None:
        """Loads a cache saved by ``save_cache_file`` or ``kvsqueeze generate --save-cache``."""
        self._engine._kvsq_epoch += 1
        self._fresh = list(self._engine.load_prompt_cache(str(path)))

    @property
    def cache(self) -> KVCache:
        """The engine's cache now: per-head lengths, bytes, keys/values/positions as numpy."""
        c = KVCache()
        c._capture(self._engine, self._engine._kvsq_epoch)
        return c

    def accounting(self) -> dict:
        return self._engine.accounting()

    # --- completions
    def _run(self, prompt_ids: list[int], max_tokens: int, sampling: dict, stop: list[str], on_text, press) -> dict:
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        fresh = self._fresh
        if fresh is not None and press is None and len(fresh) <= len(prompt_ids) and prompt_ids[: len(fresh)] == fresh:
            rest = prompt_ids[len(fresh):]  # continue the prefilled or loaded context
            self._engine.check_fits(self._engine.n_past + len(rest) + max_tokens)
        else:
            self._engine.set_plan(**validate_press(press if press is not None else self.press))
            self._engine.check_fits(len(prompt_ids))
            self._engine._kvsq_epoch += 1
            self._engine.prefill_context(prompt_ids, reserve_tokens=max_tokens)
            rest = []
        self._fresh = None
        self._engine._kvsq_epoch += 1
        return self._engine.generate(rest, max_tokens=max_tokens, stop=stop, on_text=on_text, **sampling)

    def _sampling(self, temperature: float, top_k: int, top_p: float, min_p: float, seed: int | None) -> dict:
        seed = seed if seed is not None else self.seed if self.seed is not None else random.getrandbits(63)
        return {"temperature": float(temperature), "top_k": int(top_k), "top_p": float(top_p), "min_p": float(min_p),
                "seed": int(seed)}

    def _stream(self, run) -> Iterator[tuple[str, dict | None]]:
        # The engine runs on a helper thread and hands pieces over a queue; closing the iterator
        # (or Ctrl-C while waiting) cancels it.
        pieces: queue.Queue = queue.Queue()
        done = object()
        box: dict = {}

        def work() -> None:
            try:
                box["result"] = run(lambda piece: pieces.put(piece) or True)
            except BaseException as e:  # re-raised in the caller's thread
                box["error"] = e
            pieces.put(done)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        try:
            while True:
                item = pieces.get()
                if item is done:
                    break
                yield item, None
        finally:
            if worker.is_alive():
                self._engine.cancel()
                worker.join()
        if "error" in box:
            raise box["error"]
        yield "", box["result"]

    def create_completion(self, prompt: str | list[int], suffix: str | None = None, max_tokens: int | None = 16,
                          temperature: float = 0.8, top_p: float = 0.95, min_p: float = 0.05, echo: bool = False,
                          stop: str | list[str] | None = None, stream: bool = False, seed: int | None = None,
                          top_k: int = 40, press: BasePress | None = None, **kwargs: Any):
        """A text completion as OpenAI's ``text_completion`` (an iterator of chunks with stream=True).
        ``press`` compresses this prompt (default: the LLM's press)."""
        prompt_text = prompt if isinstance(prompt, str) else self.model.detokenize(list(prompt))
        ids = self.tokenize(prompt, special=True) if isinstance(prompt, str) else list(prompt)
        max_tokens = max_tokens if max_tokens is not None and max_tokens > 0 else max(self.n_ctx() - len(ids), 0)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        sampling = self._sampling(temperature, top_k, top_p, min_p, seed)
        cid, created = f"cmpl-{uuid.uuid4()}", int(time.time())
        head = {"id": cid, "object": "text_completion", "created": created, "model": self.model_path}

        def run(on_text):
            return self._run(ids, max_tokens, sampling, stops, on_text, press)

        if stream:
            return self._stream_completion(run, head, prompt_text if echo else "", len(ids))
        result = run(None)
        text = (prompt_text if echo else "") + result["text"]
        return {**head, "choices": [{"text": text, "index": 0, "logprobs": None,
                                     "finish_reason": _FINISH.get(result["stop_reason"], "stop")}],
                "usage": _usage(len(ids), result)}

    def _stream_completion(self, run, head: dict, echo_text: str, n_prompt: int) -> Iterator[dict]:
        if echo_text:
            yield {**head, "choices": [{"text": echo_text, "index": 0, "logprobs": None, "finish_reason": None}]}
        for piece, result in self._stream(run):
            if result is None:
                yield {**head, "choices": [{"text": piece, "index": 0, "logprobs": None, "finish_reason": None}]}
            else:
                yield {**head, "choices": [{"text": "", "index": 0, "logprobs": None,
                                            "finish_reason": _FINISH.get(result["stop_reason"], "stop")}],
                       "usage": _usage(n_prompt, result)}

    __call__ = create_completion

    def create_chat_completion(self, messages: list[dict], max_tokens: int | None = None, temperature: float = 0.2,
                               top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05,
                               stop: str | list[str] | None = None, stream: bool = False, seed: int | None = None,
                               press: BasePress | None = None, **kwargs: Any):
        """A chat completion as OpenAI's ``chat.completion`` (``chat.completion.chunk`` iterator with
        stream=True), the messages rendered with the model's chat template."""
        pairs = [(m["role"], m["content"]) for m in messages]
        prompt = self.model.apply_chat_template(pairs, True)
        ids = self.model.tokenize(prompt, add_bos=self.model.add_bos, special=True)
        max_tokens = max_tokens if max_tokens is not None and max_tokens > 0 else max(self.n_ctx() - len(ids), 0)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        sampling = self._sampling(temperature, top_k, top_p, min_p, seed)
        head = {"id": f"chatcmpl-{uuid.uuid4()}", "created": int(time.time()), "model": self.model_path}

        def run(on_text):
            return self._run(ids, max_tokens, sampling, stops, on_text, press)

        if stream:
            return self._stream_chat(run, head, len(ids))
        result = run(None)
        return {**head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]}, "logprobs": None,
                             "finish_reason": _FINISH.get(result["stop_reason"], "stop")}],
                "usage": _usage(len(ids), result)}

    def _stream_chat(self, run, head: dict, n_prompt: int) -> Iterator[dict]:
        chunk = {**head, "object": "chat.completion.chunk"}
        yield {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"}, "logprobs": None, "finish_reason": None}]}
        for piece, result in self._stream(run):
            if result is None:
                yield {**chunk, "choices": [{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}]}
            else:
                yield {**chunk, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                             "finish_reason": _FINISH.get(result["stop_reason"], "stop")}],
                       "usage": _usage(n_prompt, result)}


def _usage(n_prompt: int, result: dict) -> dict:
    n = len(result["tokens"])
    return {"prompt_tokens": n_prompt, "completion_tokens": n, "total_tokens": n_prompt + n}
