"""kvsqueeze.LLM in llama-cpp-python's shape."""

import pytest

from kvsqueeze import LLM, KnormPress, SnapKVPress


@pytest.fixture(scope="module")
def llm(stories):
    return LLM(stories, n_ctx=256, n_threads=1)


def test_completion_is_openai_shaped_and_greedy_is_repeatable(llm):
    a = llm("Once upon a time", max_tokens=12, temperature=0)
    assert a["object"] == "text_completion" and a["choices"][0]["finish_reason"] == "length"
    assert a["usage"]["completion_tokens"] == 12 and a["choices"][0]["text"]
    b = llm.create_completion("Once upon a time", max_tokens=12, temperature=0)
    assert b["choices"][0]["text"] == a["choices"][0]["text"]
    echo = llm("Once upon a time", max_tokens=12, temperature=0, echo=True)
    assert echo["choices"][0]["text"] == "Once upon a time" + a["choices"][0]["text"]


def test_streaming_gives_the_same_text(llm):
    whole = llm("Lily had a ball.", max_tokens=16, temperature=0)["choices"][0]["text"]
    chunks = list(llm("Lily had a ball.", max_tokens=16, temperature=0, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    chat = llm.create_chat_completion([{"role": "user", "content": "Tell me a story."}], max_tokens=8, temperature=0)
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["role"] == "assistant"
    streamed = list(llm.create_chat_completion([{"role": "user", "content": "Tell me a story."}], max_tokens=8,
                                               temperature=0, stream=True))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in streamed) == chat["choices"][0]["message"]["content"]


def test_closing_a_stream_early_cancels_and_the_llm_stays_usable(llm):
    stream = llm("Once upon a time", max_tokens=200, temperature=0, stream=True)
    next(stream)
    stream.close()
    assert llm("Once upon a time", max_tokens=4, temperature=0)["usage"]["completion_tokens"] == 4


def test_saved_compressed_state_continues_like_the_original(llm):
    prompt = "Lily lived by the sea with her dog Max. One day"
    llm.eval(prompt, press=KnormPress(0.5))
    state = llm.save_state()
    held = llm.cache.kv_bytes_held
    first = llm(prompt, max_tokens=10, temperature=0)["choices"][0]["text"]
    llm("Something else entirely", max_tokens=4, temperature=0)
    llm.load_state(state)
    assert llm.cache.kv_bytes_held <= held and llm.cache.kv_lengths.sum() < state.n_tokens * llm.cache.kv_lengths.size
    assert llm(prompt, max_tokens=10, temperature=0)["choices"][0]["text"] == first
    with pytest.raises(RuntimeError, match="no context to save"):
        llm.save_state()


def test_press_on_completions(llm):
    a = llm("Once upon a time there was a girl", max_tokens=4, temperature=0, press=SnapKVPress(0.5, window_size=2))
    assert a["usage"]["completion_tokens"] == 4
    assert llm.cache.kv_bytes_held < llm.cache.kv_bytes_full


@pytest.mark.default_model
def test_quantized_kv_cache_answers_and_holds_its_block_bytes(default_model):
    """q8_0 and q8_0 keys / q4_0 values (llama.cpp's -ctk/-ctv) on the default model: the same
    answer as f16, and the bytes their 32-value blocks take (34 and 18 bytes against f16's 64)."""
    held = {}
    for name, kwargs in {"f16": {}, "q8_0": {"kv_type": "q8_0"}, "q8_0/q4_0": {"type_k": "q8_0", "type_v": "q4_0"}}.items():
        llm = LLM(default_model, n_ctx=256, n_threads=2, **kwargs)
        out = llm("The capital of France is", max_tokens=3, temperature=0)["choices"][0]["text"]
        assert "Paris" in out, (name, out)
        assert llm._engine.kv_type == name
        held[name] = llm.cache.kv_bytes_held
    # Per slot and head of 64 channels: f16 128 + 128 + 4 bytes, q8_0 68 + 68 + 4, q8_0/q4_0 68 + 36 + 4.
    assert held["q8_0"] / held["f16"] == pytest.approx(140 / 260)
    assert held["q8_0/q4_0"] / held["f16"] == pytest.approx(108 / 260)
