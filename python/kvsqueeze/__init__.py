"""kvsqueeze: long-context LLM inference with a compressed KV cache, from Python.

kvpress's interface (swap ``from kvpress import ...`` for ``from kvsqueeze import ...``)::

    from kvsqueeze import pipeline, ExpectedAttentionPress
    pipe = pipeline("kv-press-text-generation", model="model.gguf")
    answer = pipe(context, question=question, press=ExpectedAttentionPress(compression_ratio=0.4))["answer"]

llama-cpp-python's shape: ``kvsqueeze.LLM("model.gguf", n_ctx=4096, press=SnapKVPress(0.5))``.
The native engine (``Model``, ``Engine``) is exposed as well. See docs/PYTHON.md.
"""

from . import _core
from ._core import CancelledError, ContextFullError, Engine, Model, ModelError, kernels_isa, list_presses, validate_plan
from .cache import KVCache
from .evaluate import evaluate
from .decoding_presses import AdaSnapKVPress, CompressionRatioDecodingPress, DecodingPress, PrefillDecodingPress
from .llm import LLM, LLMState
from .pipeline import KVPressTextGenerationPipeline, pipeline
from .presses import PRESSES, BasePress, press_class
from .python_press import ScorerPress

globals().update(PRESSES)  # one class per registry press: SnapKVPress, AdaKVPress, ...

DynamicCache = KVCache  # kvpress scripts pass transformers' DynamicCache() as cache=

__all__ = [
    "AdaSnapKVPress", "BasePress", "CancelledError", "CompressionRatioDecodingPress", "ContextFullError",
    "DecodingPress", "DynamicCache", "Engine", "KVCache", "KVPressTextGenerationPipeline", "LLM", "LLMState", "Model",
    "ModelError", "PrefillDecodingPress", "ScorerPress", "evaluate", "kernels_isa", "list_presses", "pipeline", "press_class", "validate_plan",
    *sorted(PRESSES),
]
__version__ = "0.1.0"
