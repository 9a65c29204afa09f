# %% [markdown]
# ## Walkthrough (executed)
#
# A kvpress user's session, run on the default model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M) with the
# demo's document, Chapter I of *Alice's Adventures in Wonderland* (2.6K tokens). This section is
# generated: `scripts/python_walkthrough.py` runs the cells of `python/walkthrough/walkthrough.py`
# in one namespace and writes each cell's code, its printed output and its wall time here. `MODEL`
# and `DOCUMENT` are set by the runner (the default model's path, `data/demo/alice_chapter1.txt`).

# %%
import numpy as np
import kvsqueeze
from kvsqueeze import pipeline, KVCache, SnapKVPress, ExpectedAttentionPress, AdaKVPress, KnormPress

pipe = pipeline("kv-press-text-generation", model=MODEL, n_ctx=4096)
context = open(DOCUMENT).read()
question = "\nWhat was the name of Alice's cat?"
print(f"{pipe.model.n_layer} layers x {pipe.model.n_head_kv} KV heads; {len(pipe.engine.context_ids(context))} context tokens")

# %% [markdown]
# The same question from the full cache and from caches compressed by two presses at 0.5 (half
# the slots removed). `KVCache()` passed as `cache=` (kvpress's argument) reads back what the
# compressed context holds: bytes really allocated (room reserved for the question and the answer
# included) vs an uncompressed f16 cache of the context. The answers are the model's own, right or
# wrong: a 0.5B model, greedy decoding.

# %%
for press in [None, SnapKVPress(compression_ratio=0.5), ExpectedAttentionPress(compression_ratio=0.5)]:
    cache = KVCache()
    answer = pipe(context, question=question, press=press, cache=cache, max_new_tokens=24)["answer"]
    name = type(press).__name__ if press else "no press"
    print(f"{name:24s} {cache.kv_bytes_held / 2**20:5.1f} of {cache.kv_bytes_full / 2**20:.1f} MiB  {answer!r}")

# %% [markdown]
# Several questions about one compressed context: the context is prefilled and compressed once,
# each question is answered and rolled back.

# %%
questions = ["\nWhat was the name of Alice's cat?", "\nWhat was written on the little bottle?",
             "\nWhat animal with pink eyes ran close by Alice at the start of the story?"]
result = pipe(context, questions=questions, press=SnapKVPress(0.5), max_new_tokens=24)
for q, a in zip(questions, result["answers"]):
    print(q.strip(), "->", a)

# %% [markdown]
# Head-specific budgets (the AdaKV fork's example): `AdaKVPress` moves budget between the KV heads
# of a layer, so per-head lengths differ while the total matches the ratio.

# %%
cache = KVCache()
pipe(context, question=question, press=AdaKVPress(SnapKVPress(compression_ratio=0.75)), cache=cache, max_new_tokens=8)
print("layer 0 head lengths:", cache.head_lens(0), " layer 12:", cache.head_lens(12))
print(f"compression ratio {cache.compression_ratio:.3f}, held {cache.kv_bytes_held} of {cache.kv_bytes_full} bytes")

# %% [markdown]
# The cache as numpy: per layer and KV head, read-only zero-copy views of the engine's own memory
# (float16 for the default f16 cache). Here: which document positions layer 12's heads kept, and
# the norms of their keys.

# %%
keys, positions = cache.keys(12, 0), cache.positions(12, 0)
print(keys.dtype, keys.shape, "read-only:", not keys.flags.writeable, "zero-copy:", np.shares_memory(keys, cache.keys(12, 0)))
print("first kept positions of head 0:", positions[:12])
print("key norms (min / median / max):", np.percentile(np.linalg.norm(keys.astype(np.float32), axis=1), [0, 50, 100]).round(1))

# %% [markdown]
# A press written in Python: subclass `kvsqueeze.ScorerPress`, score each slot from numpy arrays;
# it runs inside the native pipeline. Knorm in three lines keeps exactly what the native
# `KnormPress` keeps.

# %%
class MyKnorm(kvsqueeze.ScorerPress):
    def score(self, keys, values, positions, **stats):
        return -np.linalg.norm(keys, axis=1)

mine, native = KVCache(), KVCache()
pipe(context, question=question, press=MyKnorm(0.5), cache=mine, max_new_tokens=1)
pipe(context, question=question, press=KnormPress(0.5), cache=native, max_new_tokens=1)
same = all(np.array_equal(mine.positions(l, h), native.positions(l, h))
           for l in range(mine.n_layer) for h in range(mine.n_head_kv))
print("same kept slots in all", mine.n_layer * mine.n_head_kv, "heads:", same)

# %% [markdown]
# llama-cpp-python's shape: `LLM` with OpenAI-style chat completions, streaming, and a press
# applied to the prompt.

# %%
llm = kvsqueeze.LLM(MODEL, n_ctx=4096, press=SnapKVPress(0.5))
reply = llm.create_chat_completion([{"role": "user", "content": context + question}], max_tokens=16, temperature=0)
print(reply["choices"][0]["message"]["content"], "|", reply["usage"])
for chunk in llm.create_chat_completion([{"role": "user", "content": "Name three colours."}], max_tokens=12, temperature=0, stream=True):
    print(chunk["choices"][0]["delta"].get("content", ""), end="")
print()
