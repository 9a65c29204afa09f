"""kvpress's presses that say *when* to compress rather than *how*: they become the plan's
decoding-time policy (``CompressionPlan.policy`` / ``decode_press``), not a registry press.
Also ``AdaSnapKVPress``, the AdaKV fork's name for AdaKV over SnapKV scores."""

from __future__ import annotations

from . import _core
from .presses import BasePress, REGISTRY_CLASSES


class DecodingPress(BasePress):
    """Compresses while decoding (kvpress ``DecodingPress``): every ``compression_interval`` generated
    tokens, ``base_press`` brings each head back to ``target_size`` slots. The context itself is not
    compressed. ``hidden_states_buffer_size`` is accepted for kvpress compatibility; the engine keeps
    the statistics its presses need itself.

    Parameters
    ----------
    base_press : press
        The press that scores the slots.
    compression_interval : int, default 512
        Generated tokens between two compressions.
    target_size : int, default 2048
        Slots per head kept by each compression.
    hidden_states_buffer_size : int, default 256
        Unused (kvpress compatibility).
    """

    _fields = ("base_press", "compression_interval", "target_size", "hidden_states_buffer_size")
    _inner_arg = "base_press"
    _default_values = {"compression_interval": 512, "target_size": 2048, "hidden_states_buffer_size": 256}

    def expression(self) -> str:
        return "none"

    def plan(self) -> dict:
        return {"press": "none", "ratio": 0.0, "decode_press": self.base_press.expression(),
                "decode_interval": int(self.compression_interval), "decode_target": int(self.target_size)}


class CompressionRatioDecodingPress(DecodingPress):
    """Compresses while decoding (kvpress ``CompressionRatioDecodingPress``): every
    ``compression_interval`` generated tokens, ``base_press`` removes ``target_compression_ratio``
    of the positions seen.

    Parameters
    ----------
    base_press, compression_interval, hidden_states_buffer_size
        As for :class:`DecodingPress`.
    target_compression_ratio : float, default 0.5
        Fraction of the positions seen that each compression removes.
    """

    _fields = ("base_press", "compression_interval", "target_compression_ratio", "hidden_states_buffer_size")
    _default_values = {"compression_interval": 512, "target_compression_ratio": 0.5, "hidden_states_buffer_size": 256}

    def plan(self) -> dict:
        return {"press": "none", "ratio": 0.0, "decode_press": self.base_press.expression(),
                "decode_interval": int(self.compression_interval), "decode_ratio": float(self.target_compression_ratio)}


class PrefillDecodingPress(BasePress):
    """One press for the context and another while decoding (kvpress ``PrefillDecodingPress``).

    Parameters
    ----------
    prefilling_press : press or None
        Compresses the context.
    decoding_press : DecodingPress or None
        Compresses while decoding.
    """

    _fields = ("prefilling_press", "decoding_press")
    _default_values = {"prefilling_press": None, "decoding_press": None}

    def expression(self) -> str:
        return self.prefilling_press.expression() if self.prefilling_press else "none"

    def ratio(self) -> float:
        return self.prefilling_press.ratio() if self.prefilling_press else 0.0

    def plan(self) -> dict:
        plan = self.prefilling_press.plan() if self.prefilling_press else {"press": "none", "ratio": 0.0}
        if self.decoding_press is not None:
            if not isinstance(self.decoding_press, DecodingPress):
                raise ValueError("PrefillDecodingPress: `decoding_press` must be a DecodingPress")
            decode = self.decoding_press.plan()
            plan.update({k: v for k, v in decode.items() if k.startswith("decode_")})
        return plan


_AdaKV = REGISTRY_CLASSES["adakv"]
_SnapKV = REGISTRY_CLASSES["snapkv"]


class AdaSnapKVPress(_AdaKV):
    """AdaKV's head-wise budgets over SnapKV scores (the AdaKV fork of kvpress, ``AdaSnapKVPress``),
    with AdaKV's original allocation rule. ``compression_ratio``, ``window_size`` and
    ``kernel_size`` are SnapKV's and may be set after construction, as in the fork's example.

    Parameters
    ----------
    compression_ratio : float, default 0.0
        Fraction of the context's KV cache removed, in [0, 1).
    window_size : int, default 64
        Queries whose attention scores the cache.
    kernel_size : int, default 5
        Width of the average pool over slots.
    alpha_safeguard : float, default 0.2
        Fraction of its own budget each head keeps at least (AdaKV's floor).
    """

    def __init__(self, compression_ratio: float = 0.0, window_size: int = 64, kernel_size: int = 5,
                 alpha_safeguard: float = 0.2) -> None:
        inner = _SnapKV(compression_ratio=compression_ratio, window_size=window_size, kernel_size=kernel_size)
        super().__init__(inner, alpha_safeguard=alpha_safeguard, rule="original", floor_alpha=alpha_safeguard)

    def __getattr__(self, name: str):
        if name in ("window_size", "kernel_size"):
            return getattr(self.press, name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value) -> None:
        if name in ("window_size", "kernel_size"):
            setattr(self.press, name, value)
        else:
            super().__setattr__(name, value)
        if name == "alpha_safeguard":
            object.__setattr__(self, "floor_alpha", value)


def validate_press(press: BasePress | None) -> dict:
    """The plan of ``press`` (None: no compression), checked by the engine."""
    plan = press.plan() if press is not None else {"press": "none", "ratio": 0.0}
    _core.validate_plan(**plan)
    return plan
