"""Press classes with kvpress's names and constructor arguments, generated from the C++ registry.

Every press registered in C++ (``kvsqueeze._core.list_presses()``) becomes a class here, with its
options as constructor arguments (defaults and docs from the registry), so a press added in C++
appears in Python without Python code. ``_KVPRESS`` below only maps kvpress's class and argument
names where they differ from the registry's. A press object becomes the engine's compression
plan: a press expression (``adakv(snapkv(window_size=8))``), the plan's ratio (kvpress's
``compression_ratio``) and decoding-time settings (``DecodingPress``).
"""

from __future__ import annotations

import inspect
import keyword
from typing import Any

from . import _core

# Registry name -> kvpress's class name, where CamelCase(name) + "Press" is not it, and how
# kvpress's constructor differs: the inner press's argument name, options it calls otherwise,
# options it does not take (set by the pipeline), and presses without a compression_ratio.
_KVPRESS: dict[str, dict[str, Any]] = {
    "adakv": {"class": "AdaKVPress"},
    "cam": {"class": "CAMPress"},
    "cur": {"class": "CURPress"},
    "composed": {"inner_arg": "presses", "hide": ["ratios"]},
    "critical": {"class": "CriticalKVPress"},
    "critical_adakv": {"class": "CriticalAdaKVPress"},
    "dililazykv": {"class": "DiliLazyKVPress"},
    "duo_attention": {"no_ratio": True},
    "global_topk": {"class": "GlobalTopKPress"},
    "headkv": {"class": "HeadKVPress"},
    "keydiff": {"class": "KeyDiffPress"},
    "kvcompose": {"class": "KVComposePress"},
    "kvzip": {"class": "KVzipPress"},
    "lagkv": {"class": "LagKVPress"},
    "non_causal_attn": {"class": "NonCausalAttnPress"},
    "per_layer": {"class": "PerLayerCompressionPress", "rename": {"ratios": "compression_ratios"}},
    "pyramidkv": {"class": "PyramidKVPress"},
    "qfilter": {"class": "QFilterPress"},
    "simlayerkv": {"class": "SimLayerKVPress", "no_ratio": True},
    "snapkv": {"class": "SnapKVPress"},
    "streaming_llm": {"class": "StreamingLLMPress"},
    "think": {"class": "ThinKPress", "no_ratio": True},
    "tova": {"class": "TOVAPress"},
    "chunkkv": {"class": "ChunkKVPress"},
}


def _class_name(name: str) -> str:
    return _KVPRESS.get(name, {}).get("class") or "".join(p.capitalize() for p in name.split("_")) + "Press"


def _format(value: Any, kind: str) -> str:
    if kind == "bool":
        return "true" if value else "false"
    if kind == "floats":
        return ":".join(repr(float(v)) for v in value) if not isinstance(value, str) else value
    if kind == "float":
        return repr(float(value))
    if kind == "int":
        return str(int(value))
    return str(value)


class BasePress:
    """Base of every press. A press object describes a compression method and its settings; the
    pipeline (or ``LLM``) turns it into the engine's compression plan with ``plan()``."""

    _registry: str = ""
    _info: dict = {}
    _fields: tuple = ()  # constructor arguments, in kvpress's order
    _inner_arg: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(self._fields):
            raise TypeError(f"{type(self).__name__}() takes at most {len(self._fields)} positional arguments")
        values = dict(zip(self._fields, args))
        for key, value in kwargs.items():
            if key not in self._fields:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument '{key}' "
                                f"(arguments: {', '.join(self._fields)})")
            if key in values:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument '{key}'")
            values[key] = value
        for field in self._fields:
            if field in values:
                object.__setattr__(self, field, values[field])
            elif field == self._inner_arg:
                raise TypeError(f"{type(self).__name__}() missing required argument '{field}'")
            else:
                object.__setattr__(self, field, self._defaults()[field])
        self.validate()

    _default_values: dict = {}

    @classmethod
    def _defaults(cls) -> dict:
        return cls._default_values

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(getattr(self, f) == getattr(other, f) for f in self._fields)

    __hash__ = None  # mutable, as kvpress's dataclasses

    # --- what the engine runs
    def expression(self) -> str:
        """The press expression the engine parses, e.g. ``adakv(snapkv(window_size=8))``."""
        raise NotImplementedError

    def ratio(self) -> float:
        """The plan's ratio: the fraction of the context's cache removed."""
        return float(getattr(self, "compression_ratio", 0.0) or 0.0)

    def plan(self) -> dict:
        """Keyword arguments of ``Engine.set_plan`` / ``validate_plan`` for this press."""
        return {"press": self.expression(), "ratio": self.ratio()}

    def validate(self) -> dict:
        """Checks the press as the engine would; raises ValueError with the engine's one-line message."""
        return _core.validate_plan(**self.plan())


class _RegistryPress(BasePress):
    """A press of the C++ registry (see ``kvsqueeze.list_presses()``)."""

    _has_ratio = True
    _hidden: tuple = ()
    _renamed: dict = {}  # registry option -> kvpress argument

    def _options(self) -> list[str]:
        out = []
        defaults = self._defaults()
        for opt in self._info["options"]:
            if opt["name"] in self._hidden:
                continue
            field = self._renamed.get(opt["name"], opt["name"])
            value = getattr(self, field)
            if value is None or value == defaults[field]:
                continue
            out.append(f"{opt['name']}={_format(value, opt['type'])}")
        return out

    def expression(self) -> str:
        args = []
        if self._inner_arg is not None:
            inner = getattr(self, self._inner_arg)
            presses = list(inner) if self._info["inner"] == -1 else [inner]
            for p in presses:
                if not isinstance(p, BasePress):
                    raise ValueError(f"{type(self).__name__}: `{self._inner_arg}` must be a press, got {p!r}")
            args += [p.expression() for p in presses]
            if self._registry == "composed":
                args.append("ratios=" + ":".join(repr(p.ratio()) for p in presses))
        args += self._options()
        return self._registry + (f"({', '.join(args)})" if args else "")

    def ratio(self) -> float:
        if self._inner_arg is None:
            return float(getattr(self, "compression_ratio", 0.0) or 0.0) if self._has_ratio else 0.0
        inner = getattr(self, self._inner_arg)
        if self._info["inner"] == -1:  # composed: each press removes its share of what is left
            kept = 1.0
            for p in inner:
                kept *= 1.0 - p.ratio()
            return 1.0 - kept
        return inner.ratio()


def _wrapper_ratio_property() -> property:
    # kvpress's wrappers read and set the compression ratio of the press they wrap.
    def get(self: BasePress) -> float:
        return self.ratio()

    def set(self: BasePress, value: float) -> None:
        inner = getattr(self, self._inner_arg)
        for p in (inner if isinstance(inner, (list, tuple)) else [inner]):
            p.compression_ratio = value

    return property(get, set, doc="The compression ratio of the wrapped press(es).")


def _make_class(info: dict) -> type:
    name = info["name"]
    table = _KVPRESS.get(name, {})
    renamed = table.get("rename", {})
    hidden = tuple(table.get("hide", [])) + ((info["question_length_option"],) if info["question_length_option"] else ())
    fields: list[str] = []
    defaults: dict[str, Any] = {}
    inner_arg = None
    if info["inner"] != 0:
        inner_arg = table.get("inner_arg", "press")
        fields.append(inner_arg)
    elif not table.get("no_ratio"):
        fields.append("compression_ratio")
        defaults["compression_ratio"] = 0.0
    doc_args = []
    for opt in info["options"]:
        if opt["name"] in hidden:
            continue
        field = renamed.get(opt["name"], opt["name"])
        if keyword.iskeyword(field):
            continue
        default = opt["default"]
        if opt["type"] == "floats":
            default = [float(x) for x in default.replace(",", ":").split(":")] if default else None
        elif opt["type"] == "string" and default == "":
            default = None
        fields.append(field)
        defaults[field] = default
        choices = f" One of {', '.join(opt['choices'])}." if opt["choices"] else ""
        doc_args.append(f"{field} : {opt['type']}, default {default!r}\n    {opt['doc']}.{choices}")
    head = [f"{info['doc']}", "", f"kvsqueeze press ``{name}``."]
    if inner_arg:
        head.append(f"Wraps {'a list of presses' if info['inner'] == -1 else 'one press'} (``{inner_arg}``).")
    params = []
    if inner_arg:
        params.append(f"{inner_arg} : {'list of presses' if info['inner'] == -1 else 'press'}\n    The wrapped press{'es' if info['inner'] == -1 else ''}.")
    elif "compression_ratio" in fields:
        params.append("compression_ratio : float, default 0.0\n    Fraction of the context's KV cache removed, in [0, 1).")
    doc = "\n".join(head) + "\n\nParameters\n----------\n" + "\n".join(params + doc_args)
    if info["notes"]:
        doc += "\n\nNotes\n-----\n" + info["notes"]
    attrs = {
        "__doc__": doc,
        "__module__": __name__,
        "_registry": name,
        "_info": info,
        "_fields": tuple(fields),
        "_default_values": defaults,
        "_inner_arg": inner_arg,
        "_has_ratio": not table.get("no_ratio"),
        "_hidden": hidden,
        "_renamed": renamed,
    }
    if inner_arg:
        attrs["compression_ratio"] = _wrapper_ratio_property()
    cls = type(_class_name(name), (_RegistryPress,), attrs)
    # help() and inspect show kvpress's constructor: (press, option=default, ...).
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    cls.__signature__ = inspect.Signature(
        [inspect.Parameter(f, kind) if f == inner_arg else inspect.Parameter(f, kind, default=defaults[f]) for f in fields])
    return cls


PRESSES: dict[str, type] = {}  # class name -> class, every registry press
REGISTRY_CLASSES: dict[str, type] = {}  # registry name -> class
for _info in _core.list_presses():
    _cls = _make_class(_info)
    PRESSES[_cls.__name__] = _cls
    REGISTRY_CLASSES[_info["name"]] = _cls
globals().update(PRESSES)


def press_class(registry_name: str) -> type:
    """The class of a registry press by its registry name (``snapkv`` -> ``SnapKVPress``)."""
    return REGISTRY_CLASSES[registry_name]
