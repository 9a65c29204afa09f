#!/usr/bin/env python3
"""Reference fixtures for tests/tokenizer_test.cpp and tests/chat_template_test.cpp.

The reference is what the kvpress pipeline runs: the HF transformers tokenizer built from a GGUF
(`AutoTokenizer.from_pretrained(dir, gguf_file=name)`) and `apply_chat_template` rendering the
models' official Jinja chat templates.

    /tmp/refenv/bin/python tests/reference/make_tokenizer_fixtures.py
    /tmp/refenv/bin/python tests/reference/make_tokenizer_fixtures.py --only qwen  # the two Qwen files
    # needs transformers (5.x), tokenizers, gguf, jinja2; run make_bpe_test_gguf.py first

Writes into tests/fixtures/tokenizer/:
  stories260K.json       llama/SentencePiece vocabulary, 512 tokens (../shared/models/stories260K.gguf)
  gemma-3-270m.json      Gemma 3 SentencePiece vocabulary, 262144 tokens (scripts/get_model.sh gemma3-270m,
                         or KVSQ_GEMMA_MODEL; skipped with a note when absent)
  qwen2.5-coder-0.5b-instruct.json
                         byte-level BPE, pre=qwen2, 151936 tokens: the real Qwen2.5-Coder-0.5B-Instruct
                         GGUF (the default model, scripts/get_model.sh qwen2.5-0.5b-instruct)
  qwen2.5-coder-chat.json
                         the Qwen GGUFs' own tokenizer.chat_template as HF's apply_chat_template renders
                         it (text and ids), with and without a system message, for the 0.5B and 1.5B
                         models (each skipped with a note when absent)
  bpe-qwen2.json         byte-level BPE, pre=qwen2     (bpe-qwen2.gguf from make_bpe_test_gguf.py)
  bpe-llama3.json        byte-level BPE, pre=llama-bpe (bpe-llama3.gguf)
  bpe-pre-variants.json  the bpe-qwen2 vocabulary under every other pre-tokenizer we implement
  chat_templates.json    official templates rendered by transformers, and kvpress's context split
Each tokenizer fixture lists, per text: the ids of tok.encode(text, add_special_tokens=False),
tok.decode(ids) and tok.decode(ids, skip_special_tokens=True) (no clean-up of spaces), plus the
ids with add_special_tokens=True for one text (BOS handling).

What HF's GGUF converter does (transformers 5.x, integrations/gguf/gguf_tokenizer_mapping.py), and
the quirks found while checking it; the C++ tokenizer reproduces the behaviour described here:
  * "llama" vocabularies become a BPE model with byte fallback whose merges are derived from the
    scores (generate_merges: every split of a token into two tokens, sorted by the merged token's
    score, then longer left part, then longer right part). Greedy merging by that rank is the
    score-driven SentencePiece BPE, with HF's tie-breaking.
  * Pre-tokenizer for llama: Metaspace(replacement="▁", prepend_scheme="first", split=False).
    QUIRK: "first" prepends "▁" only to text at offset 0 of the input (not to text after a special
    token, unlike llama.cpp which adds it after every special token), and only when that text does
    not already start with a space: " Hello" is "▁Hello", not SentencePiece's "▁▁Hello". The decoder
    then strips one leading space, so decode(encode(" Hello")) == "Hello" (round trip fails in HF
    for text with a leading space; the tests only require the round trip where HF has it).
  * QUIRK: add_space_prefix (tokenizer.ggml.add_space_prefix) is honoured for llama, but Gemma
    files go to GemmaTokenizer, which never adds a prefix (Gemma sets it false anyway).
  * Gemma: merges are ordered by vocabulary position, not by score; the space-run tokens stored
    as "  ", "   "... are renamed "▁▁", "▁▁▁"... (so they are produced by merging, not matched as
    literal user-defined text); "\\n" runs, "\\t" runs and HTML tags (user-defined) are matched whole.
  * Special tokens: every CONTROL token (and the BOS/EOS/UNK/PAD tokens, e.g. stories260K's
    "<unk>" of type UNKNOWN) is an added special token and every USER_DEFINED token an added
    non-special token, matched leftmost-longest in the raw text before anything else.
  * QUIRK: a token id of 0xFFFFFFFF ("none", as stories260K's padding/separator ids) makes
    get_gguf_tokenizer index out of range; we drop out-of-range ids before HF sees them (below).
  * "gpt2" vocabularies: GPT2Tokenizer (ByteLevel, GPT-2 regex) with the file's merges; when
    tokenizer.ggml.pre is in GGUF_PRE_TOKENIZER_SPLITS (llama-bpe, qwen2, tekken, gpt-4o...)
    the pre-tokenizer becomes Split(regex, "isolated") + ByteLevel(use_regex=False).
    QUIRK: pre names missing from that table (smollm, starcoder, deepseek-llm, deepseek-coder...)
    silently get the plain GPT-2 regex, which is not how those models split text (SmolLM splits
    digits one by one first, DeepSeek uses a sequence of splits). For them bpe-pre-variants.json
    uses the split sequences of the models' tokenizer.json / llama.cpp, built with HF tokenizers.
    QUIRK: the llama-bpe tokenizer HF builds keeps ignore_merges=False, while Llama 3's own
    tokenizer.json (and llama.cpp) use ignore_merges=True (a piece that is a whole token is not
    re-merged). The fixtures use ignore_merges=True for llama-bpe; the script prints how many
    texts would differ without it.
"""
import json
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import transformers.integrations.gguf.reader as gguf_reader  # noqa: E402
from tokenizers import Regex, pre_tokenizers  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS  # noqa: E402
from transformers.utils.chat_template_utils import render_jinja_template  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(REPO, "tests", "fixtures", "tokenizer")
STORIES = os.path.normpath(os.path.join(REPO, "..", "shared", "models", "stories260K.gguf"))
GEMMA = os.environ.get("KVSQ_GEMMA_MODEL") or os.path.expanduser(
    "~/.cache/kvsqueeze/models/gemma-3-270m-q4_k_m.gguf")
QWEN05 = os.environ.get("KVSQ_DEFAULT_MODEL") or os.path.expanduser(
    "~/.cache/kvsqueeze/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
QWEN15 = os.environ.get("KVSQ_QWEN15_MODEL") or os.path.expanduser(
    "~/.cache/kvsqueeze/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")

# --- work around get_gguf_tokenizer indexing the token list with "none" ids ----------------------
_read_gguf_metadata = gguf_reader.read_gguf_metadata


def _read_gguf_metadata_dropping_bad_ids(path, *args, **kwargs):
    metadata, rest = _read_gguf_metadata(path, *args, **kwargs)
    tokens = metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list):
        for key in [k for k in metadata if k.startswith("tokenizer.ggml.") and k.endswith("_token_id")]:
            if not 0 <= int(metadata[key]) < len(tokens):
                del metadata[key]
    return metadata, rest


gguf_reader.read_gguf_metadata = _read_gguf_metadata_dropping_bad_ids

# --- the texts ---------------------------------------------------------------------------------

TEXTS = [
    "Hello world! This is a test.",
    "The price is $1,234,567.89 (approx. 3.14159e10) -- isn't it? Yes: 42%, #hashtag, @user & co.",
    "1234567890 12345 007 3.0 -17 2024-06-01 10:30:45 99999999999999999999",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 Z\u00fcrich Cr\u00e8me br\u00fbl\u00e9e S\u00e3o Paulo Dvo\u0159\u00e1k \u00c5ngstr\u00f6m",
    "\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd\u3067\u3059\u3002\u4f60\u597d\uff0c\u4e16\u754c\uff01"
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "I \u2764\ufe0f emoji \U0001f600\U0001f680\U0001f389 \U0001f44d\U0001f3fd \U0001f1eb\U0001f1f7 "
    "family: \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "a  b   c    d     e\t\tf\n\ng\r\nh   ",
    "line one\nline two\n\n\tindented\n    four spaces\n",
    "   leading and trailing spaces   ",
    " single leading space",
    "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n",
    "<s>Hello</s> <unk> <|endoftext|>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine.",
    "The quick brown fox jumps over the lazy dog.",
    "Don't you think they'll say it's fine? I'd rather WE'D say ALL'S well. I'M HERE, YOU'RE THERE.",
    "def f(x):\n    return x ** 2  # square\n\nprint(f(3))",
    "",
    " ",
    "<table><tr><td>cell</td></tr></table> <think>hmm</think>",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u0440\u0443\u0441\u0441\u043a\u0438\u0439 "
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u05e2\u05d1\u05e8\u05d9\u05ea "
    "\u0939\u093f\u0928\u094d\u0926\u0940 \u0e44\u0e17\u0e22",
    "nbsp\u00a0here, ideographic\u3000space, line\u2028separator, \u2581 metaspace \u2581\u2581 too",
    "https://example.com/path?query=1&b=2 user@example.org C:\\Windows\\path\\",
    "MixedCASE camelCase snake_case kebab-case UPPER lower Title\u01c5Titlecase",
]


def load(path):
    return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


def cases_for(tok, texts=TEXTS):
    out = []
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        out.append({
            "text": text,
            "ids": ids,
            "decoded": tok.decode(ids, clean_up_tokenization_spaces=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False),
        })
    return out


def tokenizer_fixture(name, path, tok, note):
    bos_text = TEXTS[0]
    return {
        "name": name,
        "gguf": path,
        "note": note,
        "backend": {
            "normalizer": str(tok.backend_tokenizer.normalizer),
            "pre_tokenizer": str(tok.backend_tokenizer.pre_tokenizer),
            "decoder": str(tok.backend_tokenizer.decoder),
        },
        "with_special_tokens": {"text": bos_text, "ids": tok.encode(bos_text, add_special_tokens=True)},
        "cases": cases_for(tok),
    }


def write(name, data):
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


# --- byte-level BPE pre-tokenizer variants ------------------------------------------------------

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
DEEPSEEK_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
DEEPSEEK_LETTERS = (
    "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba"
    "\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45"
    "\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe"
    "\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc"
    "\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3"
    "\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06"
    "\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3"
    "\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
    "\U0001e900-\U0001e943]+")
DEEPSEEK_PUNCT = "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"


def split_sequence(patterns):
    steps = [pre_tokenizers.Split(Regex(p), behavior="isolated") for p in patterns]
    return pre_tokenizers.Sequence(steps + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def variant_pre_tokenizer(pre):
    if pre in GGUF_PRE_TOKENIZER_SPLITS:  # exactly what transformers' set_split_regex installs
        return split_sequence([GGUF_PRE_TOKENIZER_SPLITS[pre]])
    if pre == "default":  # GPT2Tokenizer's own pre-tokenizer
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":  # SmolLM's tokenizer.json: Digits(individual_digits=True), ByteLevel
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    if pre == "deepseek-coder":  # llama.cpp's split list for it
        return split_sequence(["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", DEEPSEEK_CJK, r"\p{N}"])
    if pre == "deepseek-llm":
        return split_sequence(["[\r\n]", DEEPSEEK_LETTERS, DEEPSEEK_PUNCT, r"\s+$", DEEPSEEK_CJK, r"\p{N}+"])
    raise ValueError(pre)


VARIANTS = ["default", "qwen2", "llama-bpe", "tekken", "gpt-4o", "smollm", "deepseek-coder", "deepseek-llm"]


def pre_variants_fixture(bpe_path):
    data = {"gguf": os.path.basename(bpe_path), "texts": TEXTS, "variants": {}}
    for pre in VARIANTS:
        tok = load(bpe_path)
        tok.backend_tokenizer.pre_tokenizer = variant_pre_tokenizer(pre)
        if pre == "llama-bpe":
            tok.backend_tokenizer.model.ignore_merges = True
        data["variants"][pre] = [tok.encode(t, add_special_tokens=False) for t in TEXTS]
    return data


# --- chat templates ------------------------------------------------------------------------------

# Official templates, from the models' tokenizer_config.json (Jinja source, escapes as written there).
QWEN25_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

LLAMA3_TEMPLATE = (
    r"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    r"'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    r"{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    r"{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

LLAMA2_TEMPLATE = (
    r"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    r"{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    r"{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    r"{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    r"{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    r"{% if loop.index0 == 0 and system_message != false %}"
    r"{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}"
    r"{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    r"{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    r"{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")

GEMMA3_TEMPLATE = r"""{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

TEMPLATES = [
    # model, our family, Jinja, bos, eos, general.architecture, tokenizer.ggml.model
    ("Qwen2.5-Instruct", "chatml", QWEN25_TEMPLATE, "", "<|im_end|>", "qwen2", "gpt2"),
    ("Meta-Llama-3-Instruct", "llama3", LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>", "llama", "gpt2"),
    ("Llama-2-chat", "llama2", LLAMA2_TEMPLATE, "<s>", "</s>", "llama", "llama"),
    ("gemma-3-it", "gemma", GEMMA3_TEMPLATE, "<bos>", "<eos>", "gemma3", "llama"),
]

CONVERSATIONS = [
    ([{"role": "system", "content": "You are a concise assistant."},
      {"role": "user", "content": "What is the capital of France?"},
      {"role": "assistant", "content": "Paris."}], False),
    ([{"role": "system", "content": "You are a concise assistant."},
      {"role": "user", "content": "What is the capital of France?"},
      {"role": "assistant", "content": "Paris."},
      {"role": "user", "content": "  And of Germany?\n"}], True),
    ([{"role": "user", "content": "Hello \u2014 caf\u00e9 \u6771\u4eac \U0001f600"}], True),
    ([{"role": "user", "content": "  padded question  "},
      {"role": "assistant", "content": "\n  padded answer \n"}], False),
]

SPLITS = [
    ("The Eiffel Tower is in Paris. It was completed in 1889.", "\nWhen was it completed?"),
    ("  A context with leading spaces and a trailing newline.\n", "\nQuestion?"),
    ("Headings: # one ## two", " What are the headings?"),
]


def render(template, messages, add_generation_prompt, bos, eos):
    rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                        add_generation_prompt=add_generation_prompt,
                                        bos_token=bos, eos_token=eos, enable_thinking=False)
    return rendered[0]


def kvpress_split(template, context, question, bos, eos):
    # kvpress/pipeline.py preprocess(), chat-template branch.
    separator = "\n" + "#" * len(context)
    rendered = render(template, [{"role": "user", "content": context + separator}], True, bos, eos)
    context_part, question_suffix = rendered.split(separator)
    return context_part, question + question_suffix


def chat_fixture():
    out = []
    for model, family, template, bos, eos, arch, tok_model in TEMPLATES:
        cases = []
        for messages, gen in CONVERSATIONS:
            if family in ("llama2", "gemma") and [m["role"] for m in messages if m["role"] != "system"][0] != "user":
                continue
            cases.append({"messages": messages, "add_generation_prompt": gen,
                          "expected": render(template, messages, gen, bos, eos)})
        splits = []
        for context, question in SPLITS:
            cp, qp = kvpress_split(template, context, question, bos, eos)
            splits.append({"context": context, "question": question, "context_part": cp, "question_part": qp})
        out.append({"model": model, "family": family, "jinja": template, "bos": bos, "eos": eos,
                    "architecture": arch, "tokenizer_model": tok_model, "cases": cases, "splits": splits})
    return {"templates": out}


# --- the real Qwen2.5-Coder instruct models -------------------------------------------------------

def versions():
    import importlib.metadata as md
    import transformers
    return {name: md.version(name) for name in ("tokenizers", "jinja2", "gguf")} | {
        "transformers": transformers.__version__, "python": sys.version.split()[0]}


QWEN_SYSTEM = {"role": "system", "content": "You are a concise assistant."}
QWEN_TURNS = [{"role": "user", "content": "What is the capital of France?"},
              {"role": "assistant", "content": "Paris."},
              {"role": "user", "content": "And of Germany?"}]
# name, messages, add_generation_prompt
QWEN_CONVERSATIONS = [
    ("system_user_assistant_user", [QWEN_SYSTEM] + QWEN_TURNS, True),
    ("user_assistant_user", QWEN_TURNS, True),  # the template inserts its default system prompt
    ("user", [{"role": "user", "content": "Write a Python function that checks whether a number is prime."}], True),
    ("system_user_no_generation_prompt", [QWEN_SYSTEM, QWEN_TURNS[0]], False),
    ("unicode_and_spaces", [{"role": "user", "content": "  Hello \u2014 caf\u00e9 \u6771\u4eac \U0001f600\n"}], True),
]


def qwen_chat_fixture():
    """HF's rendering of each Qwen GGUF's own chat template (tok.chat_template is read from
    tokenizer.chat_template by the GGUF loader), as text and as ids."""
    import hashlib
    models = []
    for path in (QWEN05, QWEN15):
        if not os.path.exists(path):
            print(f"note: {path} not found, left out of qwen2.5-coder-chat.json", file=sys.stderr)
            continue
        tok = load(path)
        cases = []
        for name, messages, gen in QWEN_CONVERSATIONS:
            text = tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False)
            enc = tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=True)
            ids = list(enc["input_ids"] if hasattr(enc, "keys") else enc)
            if ids != tok.encode(text, add_special_tokens=False):
                raise SystemExit(f"{name}: apply_chat_template ids differ from encode(rendered text)")
            cases.append({"name": name, "messages": messages, "add_generation_prompt": gen,
                          "expected_text": text, "expected_ids": ids})
        models.append({
            "gguf": os.path.basename(path),
            "chat_template_sha256": hashlib.sha256(tok.chat_template.encode("utf-8")).hexdigest(),
            "chat_template": tok.chat_template,
            "bos_token": tok.bos_token, "eos_token": tok.eos_token,
            "cases": cases,
        })
    return {
        "note": "tok = AutoTokenizer.from_pretrained(dir, gguf_file=name); expected_text = "
                "tok.apply_chat_template(messages, add_generation_prompt=..., tokenize=False); expected_ids = "
                "apply_chat_template(..., tokenize=True) (== tok.encode(expected_text, add_special_tokens=False), "
                "checked). The template is the GGUF's tokenizer.chat_template (the official Qwen2.5 one): without a "
                "system message it inserts 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.'",
        "versions": versions(),
        "models": models,
    }


def qwen_fixtures():
    if os.path.exists(QWEN05):
        fx = tokenizer_fixture("qwen2.5-coder-0.5b-instruct", os.path.basename(QWEN05), load(QWEN05),
                               "Qwen2.5-Coder-0.5B-Instruct: byte-level BPE, tokenizer.ggml.pre=qwen2, 151936 tokens")
        fx["versions"] = versions()
        write("qwen2.5-coder-0.5b-instruct.json", fx)
    else:
        print(f"note: {QWEN05} not found, qwen2.5-coder-0.5b-instruct.json left as it is", file=sys.stderr)
    write("qwen2.5-coder-chat.json", qwen_chat_fixture())


def main():
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["qwen"], help="write only the Qwen tokenizer and chat fixtures")
    if ap.parse_args().only == "qwen":
        os.makedirs(OUT, exist_ok=True)
        qwen_fixtures()
        return
    os.makedirs(OUT, exist_ok=True)
    write("stories260K.json", tokenizer_fixture("stories260K", "stories260K.gguf", load(STORIES),
                                                "llama SentencePiece vocabulary, 512 tokens"))
    if os.path.exists(GEMMA):
        write("gemma-3-270m.json", tokenizer_fixture("gemma-3-270m", "gemma-3-270m-q4_k_m.gguf", load(GEMMA),
                                                     "Gemma 3 SentencePiece vocabulary, 262144 tokens"))
    else:
        print(f"note: {GEMMA} not found, gemma-3-270m.json left as it is", file=sys.stderr)

    qwen2 = os.path.join(OUT, "bpe-qwen2.gguf")
    llama3 = os.path.join(OUT, "bpe-llama3.gguf")
    write("bpe-qwen2.json", tokenizer_fixture("bpe-qwen2", "bpe-qwen2.gguf", load(qwen2),
                                              "byte-level BPE, tokenizer.ggml.pre=qwen2"))
    tok = load(llama3)
    plain = [tok.encode(t, add_special_tokens=False) for t in TEXTS]
    tok.backend_tokenizer.model.ignore_merges = True  # as Llama 3's tokenizer.json (see the docstring)
    fixture = tokenizer_fixture("bpe-llama3", "bpe-llama3.gguf", tok,
                                "byte-level BPE, tokenizer.ggml.pre=llama-bpe, ignore_merges=True")
    differ = sum(1 for c, p in zip(fixture["cases"], plain) if c["ids"] != p)
    print(f"llama-bpe: {differ} of {len(TEXTS)} texts differ between ignore_merges True and False")
    write("bpe-llama3.json", fixture)
    write("bpe-pre-variants.json", pre_variants_fixture(qwen2))
    write("chat_templates.json", chat_fixture())
    qwen_fixtures()


if __name__ == "__main__":
    main()
