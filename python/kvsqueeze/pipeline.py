"""kvpress's pipeline on the native engine: ``pipeline("kv-press-text-generation", model="m.gguf")``,
then ``pipe(context, question=..., press=...)["answer"]``. As kvpress does, the chat template is
applied to context + question and cut after the context; only the context is compressed, once,
and each question is answered greedily from it (then rolled back for the next)."""

from __future__ import annotations

import threading
from typing import Any

from . import _core
from .cache import KVCache
from .decoding_presses import DecodingPress, PrefillDecodingPress, validate_press
from .presses import BasePress

TASK = "kv-press-text-generation"


class KVPressTextGenerationPipeline:
    """Answers questions about a context whose KV cache a press compresses.

    The model is loaded once and shared; each thread calling the pipeline gets its own Engine on
    it, so one pipeline serves several threads."""

    def __init__(self, model: str | _core.Model, n_ctx: int = 0, n_threads: int = 0, kv_type: str = "f16",
                 chunk: int = 512, type_k: str | None = None, type_v: str | None = None,
                 kv_rotation: str = "auto", kv_centering: str = "auto") -> None:
        self.model = model if isinstance(model, _core.Model) else _core.Model.load(str(model))
        self._engine_args = {"ctx_size": n_ctx, "threads": n_threads, "kv_type": kv_type, "chunk": chunk,
                             "type_k": type_k, "type_v": type_v, "kv_rotation": kv_rotation,
                             "kv_centering": kv_centering}
        _core.Engine(self.model, **self._engine_args)  # bad settings fail here, not at the first call
        self._local = threading.local()

    @property
    def engine(self) -> _core.Engine:
        """This thread's engine."""
        engine = getattr(self._local, "engine", None)
        if engine is None:
            engine = _core.Engine(self.model, **self._engine_args)
            engine._kvsq_epoch = 0
            self._local.engine = engine
        return engine

    def __call__(self, context: str, question: str | None = None, questions: list[str] | None = None,
                 answer_prefix: str | None = None, press: BasePress | None = None, max_new_tokens: int = 50,
                 max_context_length: int | None = None, enable_thinking: bool = False,
                 cache: KVCache | None = None, **kwargs: Any) -> dict:
        """Answers ``question`` (or each of ``questions``) about ``context``, whose cache ``press``
        compresses. Returns ``{"answer": str}`` or ``{"answers": [str, ...]}``."""
        if question is not None and questions is not None:
            raise ValueError("Either question or questions should be provided, not both.")
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(sorted(kwargs))}")
        if press is not None and not isinstance(press, BasePress):
            raise ValueError(f"`press` must be a kvsqueeze press, got {type(press).__name__}")
        single = questions is None
        questions = questions if questions is not None else [question if question else ""]
        if isinstance(press, (DecodingPress, PrefillDecodingPress)) and len(questions) > 1:
            raise ValueError("DecodingPress is not compatible with multiple questions. Please specify a single question.")
        plan = validate_press(press)
        engine = self.engine
        engine.set_plan(**plan)
        context_ids = engine.context_ids(context)
        if max_context_length is not None:
            context_ids = context_ids[: int(max_context_length)]
        prefix = self.model.tokenize(answer_prefix, add_bos=False) if answer_prefix else []
        question_ids = [engine.question_ids(context, q) + prefix for q in questions]
        longest = max(len(q) for q in question_ids)
        engine.check_fits(len(context_ids) + longest + max_new_tokens)
        engine._kvsq_epoch += 1
        engine.prefill_context(context_ids, reserve_tokens=longest + max_new_tokens)
        self.last_cache = KVCache()
        self.last_cache._capture(engine, engine._kvsq_epoch)
        if cache is not None:
            cache._capture(engine, engine._kvsq_epoch, snapshot=True)
        answers = [engine.answer(ids, max_tokens=max_new_tokens, temperature=0.0, keep_context=True)["text"]
                   for ids in question_ids]
        return {"answer": answers[0]} if single else {"answers": answers}


def pipeline(task: str = TASK, model: str | _core.Model | None = None, **kwargs: Any) -> KVPressTextGenerationPipeline:
    """kvpress's entry point: ``pipeline("kv-press-text-generation", model="model.gguf")``.

    ``model`` is a GGUF path or a loaded ``kvsqueeze.Model``. Engine settings: ``n_ctx``,
    ``n_threads``, ``kv_type`` (f16, bf16, f32, q8_0, q4_0, kivi2; ``type_k``/``type_v`` for keys or
    values alone), ``chunk``. transformers' ``device``,
    ``torch_dtype``, ``model_kwargs`` and ``trust_remote_code`` are accepted and ignored (the engine
    runs on the CPU with the GGUF's own weights)."""
    if task != TASK:
        raise ValueError(f"unknown task '{task}': kvsqueeze provides '{TASK}'")
    if model is None:
        raise ValueError("pipeline() needs model= (a GGUF file)")
    for ignored in ("device", "device_map", "torch_dtype", "model_kwargs", "trust_remote_code", "tokenizer"):
        kwargs.pop(ignored, None)
    return KVPressTextGenerationPipeline(model, **kwargs)
