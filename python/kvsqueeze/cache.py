"""The KV cache of an engine, read from Python: per-head lengths, bytes held, and per layer and KV
head the cached keys, values and positions as numpy arrays.

The arrays are read-only and, where the cache stores the rows as numpy can hold them (f16 -> float16,
f32 -> float32 keys and values that are not rotated or centred; positions always), zero-copy views
of the engine's own memory. A view keeps that memory alive: it stays valid and unchanged after the
engine compresses, rolls back, moves on to another context or is deleted, because the engine
writes to a fresh copy of a run while a view of it lives (copy on write). Other cache types
(bf16, q8_0, q4_0, kivi2, rotated or centred keys) give float32 copies of the decoded rows.
A KVCache passed as ``cache=`` holds the compressed context's runs themselves (a snapshot: no
copy, the engine copies a run before writing it while the snapshot holds it), so it stays readable
after later calls, like kvpress's cache object. ``LLM.cache`` and ``pipeline.last_cache`` read from
their engine lazily instead and refuse to read once it moved on (a new context, a later call)
rather than return another context's data; arrays given out before stay as they were."""

from __future__ import annotations

import numpy as np


class KVCache:
    """What a compressed context's cache holds. Pass one as ``cache=`` to the pipeline (kvpress's
    argument) to get the cache of the context it compressed, or read ``LLM.cache``."""

    def __init__(self) -> None:
        self._engine = None
        self._epoch = None
        self._snapshot = None
        self._accounting: dict | None = None

    def _capture(self, engine, epoch, snapshot: bool = False) -> None:
        self._engine, self._epoch = engine, epoch
        self._accounting = engine.accounting()
        self._snapshot = engine.cache_snapshot() if snapshot else None

    def _check(self) -> None:
        if self._engine is None:
            raise RuntimeError("this KVCache is empty: pass it as cache= to a pipeline call first")
        if getattr(self._engine, "_kvsq_epoch", None) != self._epoch:
            raise RuntimeError("the engine this KVCache was read from has moved on to another context")

    def _acc(self) -> dict:
        if self._accounting is None:
            raise RuntimeError("this KVCache is empty: pass it as cache= to a pipeline call first")
        return self._accounting

    @property
    def kv_lengths(self) -> np.ndarray:
        """Slots kept per (layer, KV head), an n_layer x n_head_kv int64 array."""
        return self._acc()["kv_lengths"]

    def head_lens(self, layer: int) -> np.ndarray:
        """Slots kept by each KV head of ``layer`` (the AdaKV fork's ``metadata.head_lens``)."""
        return self.kv_lengths[layer]

    def get_seq_length(self, layer: int = 0) -> int:
        """The longest head of ``layer`` (transformers' ``Cache.get_seq_length``)."""
        return int(self.kv_lengths[layer].max()) if self.kv_lengths.size else 0

    @property
    def n_layer(self) -> int:
        return int(self.kv_lengths.shape[0])

    @property
    def n_head_kv(self) -> int:
        return int(self.kv_lengths.shape[1])

    @property
    def kv_bytes_held(self) -> int:
        """Bytes allocated for the cache's runs (memory really freed by compression)."""
        return int(self._acc()["kv_bytes_held"])

    @property
    def kv_bytes_used(self) -> int:
        return int(self._acc()["kv_bytes_used"])

    @property
    def kv_bytes_full(self) -> int:
        """What an uncompressed f16 cache of the same positions would hold."""
        return int(self._acc()["kv_bytes_full"])

    @property
    def compression_ratio(self) -> float:
        """1 - slots kept / slots of an uncompressed cache of the same positions."""
        lengths = self.kv_lengths
        full = self._acc()["context_tokens"] * lengths.size
        return 1.0 - float(lengths.sum()) / full if full else 0.0

    def _read(self, what: str, layer: int, head: int) -> np.ndarray:
        if self._snapshot is not None:
            return getattr(self._snapshot, what)(layer, head)
        self._check()
        return getattr(self._engine, "cache_" + what)(layer, head)

    def keys(self, layer: int, head: int) -> np.ndarray:
        """Cached (post-RoPE) keys of one KV head, slots x head_dim_k, read-only: a zero-copy view in the
        cache's type (float16 for the default f16 cache), or a float32 copy for the other types."""
        return self._read("keys", layer, head)

    def values(self, layer: int, head: int) -> np.ndarray:
        """Cached values of one KV head, slots x head_dim_v, read-only (a view or a float32 copy, as
        keys())."""
        return self._read("values", layer, head)

    def positions(self, layer: int, head: int) -> np.ndarray:
        """Original positions of one KV head's slots, ascending, int32 (a read-only zero-copy view)."""
        return self._read("positions", layer, head)

    def __repr__(self) -> str:
        if self._accounting is None:
            return "KVCache(empty)"
        return (f"KVCache(n_layer={self.n_layer}, n_head_kv={self.n_head_kv}, "
                f"kv_bytes_held={self.kv_bytes_held}, kv_bytes_full={self.kv_bytes_full})")
