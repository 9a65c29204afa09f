#!/usr/bin/env python3
"""Build small tokenizer-only byte-level BPE GGUFs for the tokenizer tests.

No real byte-level BPE model (Qwen, Llama 3, SmolLM...) is available offline, so we train our own
tiny one with HF `tokenizers` on a deterministic text generated below, and write it the way
llama.cpp's converter writes a "gpt2" vocabulary:

    tokenizer.ggml.model       = "gpt2"
    tokenizer.ggml.pre         = "qwen2"      (bpe-qwen2.gguf, general.architecture = qwen2)
                               = "llama-bpe"  (bpe-llama3.gguf, general.architecture = llama)
    tokenizer.ggml.tokens      = the vocabulary in GPT-2 byte-to-unicode spelling
    tokenizer.ggml.token_type  = 1 (normal) / 3 (control: <|endoftext|>, <|im_start|>, ...) /
                                 4 (user-defined: <think>, </think>)
    tokenizer.ggml.merges      = "left right" pairs, best first
plus the special token ids and the few model hyper-parameters HF needs to rebuild a config from
the file (there are no tensors).

Both files share one vocabulary (ids are identical); only the pre-tokenizer name, architecture
and BOS settings differ. Training uses the llama3 split regex followed by ByteLevel.

Deterministic: the corpus comes from a fixed-seed generator, and training runs single-threaded
(RAYON_NUM_THREADS=1), so running it twice gives byte-identical files.

    /tmp/refenv/bin/python tests/reference/make_bpe_test_gguf.py [out_dir]
    # default out_dir: tests/fixtures/tokenizer/
"""
import os
import sys

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gguf  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "..", "tests", "fixtures", "tokenizer")

N_MERGES = 2000
# Control tokens first (ids 0..7), then the user-defined ones (8, 9).
CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|end_of_text|>",
           "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
USER_DEFINED = ["<think>", "</think>"]

# The Llama 3 pre-tokenizer regex. Training with it (digits in groups of up to three) gives the
# vocabulary multi-digit tokens, so the llama-bpe and qwen2 (one digit per piece) splits differ.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# --- deterministic training text -------------------------------------------------------------

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time there was a little girl who lived in a village near the forest.",
    "She liked to walk by the river and count the boats that sailed past her house.",
    "In 1969, the first people walked on the Moon; it took about 3 days to get there.",
    "The recipe needs 250 grams of flour, 2 eggs, 125 ml of milk and a pinch of salt.",
    "Prices rose by 3.5% in 2023, while wages grew by only 2.1% over the same period.",
    "Don't forget: we'll meet at 10:30 a.m. on Monday, and they're bringing the maps.",
    "I've seen the report, you'd better read it too; it's longer than we thought.",
    "A café in Zürich serves crème brûlée, naïve tourists pay 12,50 CHF for it.",
    "São Paulo, Kraków, Malmö and Dvořák are names with diacritics.",
    "Tokyo is 東京 and Beijing is 北京; 你好，世界 means hello world.",
    "こんにちは、元気ですか？ 日本語のテキストも少し入れておきます。",
    "Emoji are bytes too: 😀 🚀 🎉 👍 and sometimes ❤️ or 🇫🇷.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 40))\n",
    "for (int i = 0; i < n; ++i) { total += values[i] * 2; }",
    "Email me at someone@example.com or visit https://example.org/docs?page=2.",
    "The year 2024 has 366 days, and 1,234,567 is a large number.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "Water boils at 100 degrees Celsius and freezes at 0 degrees.",
    "He said: \"Nothing is impossible!\" and she replied (quietly) — \"maybe\".",
    "Tabs\tand  double  spaces,   and\nnew lines\n\nare whitespace.",
    "Ελληνικά, русский язык, العربية and עברית appear in the training text.",
]

WORDS = ("time year people way day man thing woman life child world school state family student "
         "group country problem hand part place case week company system program question work "
         "government number night point home water room mother area money story fact month lot "
         "right study book eye job word business issue side kind head house service friend father "
         "power hour game line end member law car city community name president team minute idea "
         "kid body information back parent face others level office door health person art war "
         "history party result change morning reason research girl guy moment air teacher force "
         "education").split()


SYLLABLES = ("ka ri to na mo lu se vi da pe zo qua bre stin gor fal mek chu xan dri "
             "ol um ex ith ar en ound ight tion ness ly ing ed er est ful").split()


def lcg(seed):
    state = seed
    while True:
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        yield state >> 33


def corpus():
    rng = lcg(20240917)
    parts = []
    for _ in range(3):
        parts.extend(SENTENCES)
    for _ in range(12000):
        r = next(rng)
        kind = r % 8
        if kind < 4:
            n = 3 + next(rng) % 9
            words = [WORDS[next(rng) % len(WORDS)] for _ in range(n)]
            if next(rng) % 3 == 0:
                words[0] = words[0].capitalize()
            parts.append(" ".join(words) + (". " if next(rng) % 2 else ", "))
        elif kind == 4:
            parts.append(str(next(rng) % 100000) + " ")
        elif kind == 5:
            parts.append(SENTENCES[next(rng) % len(SENTENCES)] + ("\n" if next(rng) % 2 else " "))
        elif kind == 6:
            parts.append(f"{next(rng) % 1000}.{next(rng) % 100:02d} ")
        else:
            # pseudo-words made of syllables give the merges something beyond the word list
            n = 1 + next(rng) % 4
            words = ["".join(SYLLABLES[next(rng) % len(SYLLABLES)] for _ in range(1 + next(rng) % 3))
                     for _ in range(n)]
            parts.append(" ".join(words) + " ")
    return "".join(parts)


def train():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    n_special = len(CONTROL) + len(USER_DEFINED)
    trainer = trainers.BpeTrainer(
        vocab_size=n_special + 256 + N_MERGES,
        min_frequency=2,
        special_tokens=CONTROL + USER_DEFINED,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = corpus()
    lines = text.split("\n")
    tok.train_from_iterator(lines, trainer=trainer)
    return tok


def vocab_and_merges(tok):
    import json
    model = json.loads(tok.to_str())["model"]
    vocab = model["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    assert all(t is not None for t in tokens)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges


def write_gguf(path, tokens, merges, arch, pre):
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"kvsqueeze tokenizer test ({pre})")
    # Minimal hyper-parameters: enough for transformers to rebuild a config from the metadata.
    w.add_context_length(4096)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    types = []
    for t in tokens:
        if t in CONTROL:
            types.append(gguf.TokenType.CONTROL)
        elif t in USER_DEFINED:
            types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    w.add_token_types(types)
    w.add_token_merges(merges)
    ids = {t: i for i, t in enumerate(tokens)}
    if pre == "llama-bpe":
        w.add_bos_token_id(ids["<|begin_of_text|>"])
        w.add_eos_token_id(ids["<|end_of_text|>"])
        w.add_eot_token_id(ids["<|eot_id|>"])
        w.add_add_bos_token(True)
    else:
        w.add_bos_token_id(ids["<|endoftext|>"])
        w.add_eos_token_id(ids["<|im_end|>"])
        w.add_pad_token_id(ids["<|endoftext|>"])
        w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    os.makedirs(out, exist_ok=True)
    tok = train()
    tokens, merges = vocab_and_merges(tok)
    assert tokens[:len(CONTROL) + len(USER_DEFINED)] == CONTROL + USER_DEFINED
    for name, arch, pre in (("bpe-qwen2.gguf", "qwen2", "qwen2"), ("bpe-llama3.gguf", "llama", "llama-bpe")):
        path = os.path.join(out, name)
        write_gguf(path, tokens, merges, arch, pre)
        print(f"wrote {path}: {len(tokens)} tokens, {len(merges)} merges, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
