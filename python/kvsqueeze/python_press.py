"""Presses written in Python that run inside the native pipeline.

Subclass ``ScorerPress`` and implement ``score``: it is called for every layer (when the pipeline
compresses it: after the context's prefill, or while decoding under a decoding policy) and every KV
head, with numpy arrays of that head's cache, and returns one score per slot; the engine keeps the
highest (``+inf``: never evicted), compacts the cache and frees what was removed. Such a press goes
wherever a built-in one does: ``pipeline(...)(context, press=MyPress(0.5))``,
``AdaKVPress(MyPress(0.5))``, ``PerLayerCompressionPress``, ``DecodingPress``... ::

    class MyKnorm(kvsqueeze.ScorerPress):
        def score(self, keys, values, positions, **stats):
            return -np.linalg.norm(keys, axis=1)

Statistics the forward pass computes only when a press asks for them (class attributes):
``window_queries = W`` gives ``attention``: the attention probabilities of the context's last W
queries over the head's slots, ``group x W x slots`` (the query heads sharing this KV head);
``column_sums = True`` gives ``column_sums``: the attention each slot received, ``group x slots``.
``score`` also receives ``layer`` and ``head``.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import numpy as np

from . import _core
from .presses import BasePress

_names = itertools.count(1)


class ScorerPress(BasePress):
    """Base of presses written in Python: implement ``score(keys, values, positions, **stats)``
    returning one score per slot (higher kept); set ``window_queries`` / ``column_sums`` to receive
    attention statistics. ``compression_ratio`` is the fraction of the context's cache removed."""

    _fields = ("compression_ratio",)
    _default_values = {"compression_ratio": 0.0}
    window_queries: int = 0
    column_sums: bool = False

    def __init__(self, compression_ratio: float = 0.0) -> None:
        object.__setattr__(self, "compression_ratio", compression_ratio)
        self.validate()

    def score(self, keys: np.ndarray, values: np.ndarray, positions: np.ndarray, **stats: Any) -> np.ndarray:
        """keys (slots x head_dim_k, post-RoPE as cached), values (slots x head_dim_v), positions
        (slots,) of one KV head; stats: layer, head and what the press asked for. Returns (slots,)."""
        raise NotImplementedError(f"{type(self).__name__} must implement score()")

    def expression(self) -> str:
        # Registered once per object, under a name of its own: the engine calls this very object.
        name = self.__dict__.get("_kvsq_name")
        if name is None:
            stem = re.sub(r"[^A-Za-z0-9_]", "_", type(self).__name__).lower()
            name = f"py_{stem}_{next(_names)}"
            _core.register_python_press(self, name, (type(self).__doc__ or "").strip().split("\n")[0],
                                        int(self.window_queries), bool(self.column_sums))
            object.__setattr__(self, "_kvsq_name", name)
        return name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(compression_ratio={getattr(self, 'compression_ratio', 0.0)!r})"
