#!/usr/bin/env python3
"""Writes tests/fixtures/eval/longbench_metrics.json: expected answer scores computed by the
official Python code, for tests/eval_metrics_test.cpp.

The official functions are imported, not re-implemented:
  * THUDM/LongBench LongBench/metrics.py (every metric function) and LongBench/eval.py
    (`scorer`: max over references, the first-line cut). LongBench is a repository, not a pip
    package, so pass its folder with --longbench (the folder holding metrics.py and eval.py).
  * NVIDIA/RULER scripts/eval/synthetic/constants.py (string_match_all / string_match_part), given
    with --ruler-constants. Predictions are first cleaned as kvpress's
    evaluation/benchmarks/ruler/calculate_metrics.py does (the one regex line is quoted below).
  * kvpress's needle_in_haystack scoring is one call of the `rouge` package:
    Rouge().get_scores(needle.strip(), predicted_answer.strip())[0]; we keep its "rouge-l" "f".
PyPI packages (into the venv; the product never needs them): rouge, fuzzywuzzy (without
python-Levenshtein, as LongBench's requirements.txt installs it: difflib's SequenceMatcher),
jieba (metrics.py imports it), numpy (eval.py imports it).

  ~/.cache/kvsqueeze/venv/bin/pip install rouge==1.0.1 fuzzywuzzy==0.18.0 jieba==0.42.1
  ~/.cache/kvsqueeze/venv/bin/python tests/reference/eval/make_longbench_metric_fixture.py \
      --longbench PATH/TO/LongBench/LongBench --ruler-constants PATH/TO/RULER/scripts/eval/synthetic/constants.py

Cases are hand-written plus seeded random ones (random.Random(20240601)), so the output is
reproducible byte for byte with the same package versions.
"""
import argparse
import importlib.util
import json
import os
import platform
import random
import re
import sys
import warnings
from importlib import metadata


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- cases
QA_CASES = [
    ("The Eiffel Tower", "Eiffel Tower"),
    ("Paris", "paris"),
    ("paris france", "Paris"),  # F1 2/3; recall would be 1
    ("It was in Paris, the capital of France.", "Paris"),  # F1 0.25; recall would be 1
    ("an apple a day", "the apple"),
    ("", "Paris"),
    ("Paris", ""),
    ("", ""),
    ("...", "!!!"),
    ("a an the", "the"),
    ("The the THE theater", "theater"),
    ("Anna and Annie", "an anna"),
    ("1,000 people", "1000 people"),
    ("3.14", "314"),
    ("rock'n'roll", "rocknroll"),
    ("Café au lait", "café"),
    ("ÉCOLE Normale", "école normale"),
    ("İstanbul", "i̇stanbul"),
    ("ΣΟΦΟΣ", "σοφος"),
    ("ΣΟΦΟΣ", "σοφοσ"),
    ("Straße", "strasse"),
    ("naïve a café", "naïve café"),
    ("éa b", "éa"),
    ("éa", "é"),  # 'é' is a word character: no article boundary inside "éa"
    ("Ωthe end", "Ω end"),
    ("the_end", "the end"),
    ("a\u00a0b\u3000the\tc\nd", "a b c d"),
    ("yes yes yes", "yes"),
    ("no", "yes no no"),
    ("東京 is the capital", "東京"),
    ("«quoted» “text” — dash", "quoted text dash"),
    ("unanswerable", "Unanswerable"),
    ("x²", "x2"),
    ("a1 the2 an_", "a1 the2 an"),
]

ROUGE_CASES = [
    ("the cat sat on the mat", "the cat is on the mat"),
    ("The cat sat. The dog ran.", "A dog ran. The cat sat down."),
    ("", "reference text"),
    ("hypothesis text", ""),
    ("...", "a b c"),
    (" . ", "a b"),
    (" . ", " . "),
    ("a b c", "c b a"),
    ("word", "word"),
    ("one two. two three. three one.", "one two three."),
    ("repeat repeat repeat", "repeat"),
    ("Dr. Smith went to Washington.  He met   Mr. Jones.", "Smith met Jones in Washington."),
    ("multi\nline\ttext. with\u00a0spaces", "line text with spaces"),
    ("naïve café. résumé", "café résumé naïve"),
    ("3.14 is pi", "pi is 3.14"),
    ("a. b. c. d.", "d. c. b. a."),
    ("x y z", "a b c"),
]

CLASS_SETS = [
    ["Abbreviation", "Animal", "Description of something", "Entity", "Human being", "Location", "Other location",
     "Number", "Other number", "Description", "Definition of something"],
    ["体育", "财经", "房产", "时政", "时政新闻", "娱乐"],
    ["cat", "cat food", "dog", "cat", "hot dog"],
    ["New", "York", "New York", "Boston"],
    ["a", "b", "ab", "c"],
]
CLASSIFICATION_CASES = [
    ("Location", "Location", 0),
    ("Other location", "Other location", 0),  # "location"? no: case-sensitive; "Location" not in it
    ("Type: Other number", "Other number", 0),
    ("Number", "Other number", 0),
    ("Description of something", "Description of something", 0),  # "Description" is removed, then skip quirk
    ("Description of something, Definition of something", "Description", 0),
    ("Human being or Animal", "Animal", 0),
    ("", "Entity", 0),
    ("Entity Entity", "Entity", 0),
    ("Abbreviation Animal Entity", "Entity", 0),
    ("时政新闻", "时政新闻", 1),
    ("时政", "时政新闻", 1),
    ("体育 财经", "财经", 1),
    ("cat food and a hot dog", "cat food", 2),
    ("cat food", "cat", 2),
    ("hot dog", "hot dog", 2),
    ("New York", "New York", 3),  # "New" removed while iterating, so "York" is skipped and stays
    ("I'd say New York or Boston", "New York", 3),
    ("New", "New York", 3),
    ("ab", "ab", 4),
    ("a b c", "c", 4),
    ("abc", "ab", 4),
]

RETRIEVAL_CASES = [
    ("Paragraph 12", "Paragraph 12"),
    ("The answer is Paragraph 3.", "Paragraph 3"),
    ("Paragraph 3 or Paragraph 30", "Paragraph 3"),
    ("Paragraph 03", "Paragraph 3"),
    ("no number here", "Paragraph 7"),
    ("7 7 8", "Paragraph 7"),
    ("Paragraph ７", "Paragraph 7"),
    ("Paragraph 12", "Paragraph 12 and Paragraph 5"),
    ("١٢", "Paragraph 12"),
    ("Paragraph 5", "no paragraph id"),  # LongBench raises IndexError
    ("Paragraph 5", "Paragraph5"),        # likewise (no space)
]
RETRIEVAL_ZH_CASES = [
    ("段落3", "段落3"),
    ("答案是段落12。", "段落12"),
    ("段落1和段落2", "段落2"),
    ("段落 4", "段落4"),
    ("没有", "段落4"),
]
COUNT_CASES = [
    ("12", "12"),
    ("There are 12 unique paragraphs.", "12"),
    ("12, 13 or 12", "12"),
    ("twelve", "12"),
    ("", "3"),
    ("012", "12"),
    ("3.0", "3"),
    ("１２", "12"),
    ("1 2 3 4", "4"),
]
CODE_CASES = [
    ("x = 1", "x = 1"),
    ("x = 1\n", "x = 2"),
    ("\n\n    return self.value", "    return self.value"),
    ("# comment\nfoo(bar)", "foo(bar)"),
    ("```python\nfoo(bar)\n```", "foo(bar)"),
    ("// C comment\nint x = 0;", "int x = 0;"),
    ("int x = 0; // trailing\nint y;", "int x = 0;"),
    ("print('#')\nprint(1)", "print(1)"),
    ("`a`\n# b\n// c", "anything"),
    ("", "x"),
    ("", ""),
    ("\n", ""),
    ("abc", ""),
    ("for i in range(10):", "for j in range(10):"),
    ("self.assertEqual(a, b)", "self.assertEquals(a, b)"),
    ("café = 'naïve'", "cafe = 'naive'"),
    ("abcd", "abce"),           # ratio 0.75 -> 75
    ("ab", "ac"),                # 50
    ("a" * 150 + "b" * 120, "a" * 140 + "c" + "b" * 130),  # b >= 200: autojunk
    (" ".join(["token"] * 60), " ".join(["token"] * 58) + " end"),
]

WORDS = ["the", "a", "an", "The", "cat", "Cat", "dog", "sat", "on", "mat", "Paris", "paris", "café", "naïve",
         "İstanbul", "ΣΟΦΟΣ", "東京", "1,000", "42", "3.14", "rock'n'roll", "(note)", "well-known", "U.S.", "e.g.",
         "end.", "don't", "__init__", "x²", "—", "...", "!", "?", "Straße"]
SPACES = [" ", " ", " ", "  ", "\t", "\n", "\u00a0", "\u3000"]
CODE_PIECES = ["x", "y", "=", " ", "self.", "foo", "(", ")", "[i]", "+", "1", "return ", "if ", ":", "'s'", "é",
               "None", ",", "    ", "bar", "_", "0"]
CODE_MARKERS = ["#", "//", "`", "\n", "\n"]  # comment and fence markers, line breaks: rarer


def random_text(rng, words, max_words, spaces=SPACES):
    n = rng.randint(0, max_words)
    out = ""
    for i in range(n):
        if i:
            out += rng.choice(spaces)
        out += rng.choice(words)
    return out


def random_code(rng, max_pieces):
    return "".join(rng.choice(CODE_MARKERS) if rng.random() < 0.06 else rng.choice(CODE_PIECES)
                   for _ in range(rng.randint(0, max_pieces)))


def mutate(rng, items, alphabet):
    """A copy of items with some elements dropped, replaced or inserted (related texts overlap)."""
    out = []
    for item in items:
        roll = rng.random()
        if roll < 0.15:
            continue
        out.append(rng.choice(alphabet) if roll < 0.3 else item)
        if rng.random() < 0.1:
            out.append(rng.choice(alphabet))
    return out


def related_text(rng, text, words):
    return rng.choice(SPACES).join(mutate(rng, text.split(), words))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--longbench", required=True, help="folder with LongBench's metrics.py and eval.py")
    parser.add_argument("--ruler-constants", required=True, help="RULER scripts/eval/synthetic/constants.py")
    parser.add_argument("-o", "--output", default=os.path.join(os.path.dirname(__file__), "..", "..", "..",
                                                                "tests", "fixtures", "eval", "longbench_metrics.json"))
    args = parser.parse_args()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fuzzywuzzy's "slow pure-python SequenceMatcher" warning
        sys.path.insert(0, os.path.abspath(args.longbench))  # eval.py does `from metrics import ...`
        metrics = load_module("metrics", os.path.join(args.longbench, "metrics.py"))
        sys.modules["metrics"] = metrics
        lb_eval = load_module("longbench_eval", os.path.join(args.longbench, "eval.py"))
        ruler = load_module("ruler_constants", args.ruler_constants)
    from fuzzywuzzy import fuzz
    from rouge import Rouge
    assert "difflib" in fuzz.SequenceMatcher.__module__, "uninstall python-Levenshtein: LongBench runs without it"

    rng = random.Random(20240601)
    cases = []

    def add(metric, fn, prediction, reference, all_classes=None):
        case = {"metric": metric, "prediction": prediction, "reference": reference}
        if all_classes is not None:
            case["all_classes"] = all_classes
        try:
            case["expected"] = float(fn(prediction, reference, all_classes=all_classes))
        except Exception as e:  # the official code raises (e.g. no "Paragraph N" in the reference)
            case["raises"] = type(e).__name__
        cases.append(case)

    def add_text_cases(metric, fn, fixed, pred_words, ref_words):
        """The fixed cases, then 150 random predictions against a related (70%) or random reference."""
        for p, r in fixed:
            add(metric, fn, p, r)
        for _ in range(150):
            p = random_text(rng, WORDS, pred_words)
            r = related_text(rng, p, WORDS) if rng.random() < 0.7 else random_text(rng, WORDS, ref_words)
            add(metric, fn, p, r)

    add_text_cases("qa_f1", metrics.qa_f1_score, QA_CASES, 12, 6)
    add_text_cases("rouge_l", metrics.rouge_score, ROUGE_CASES, 40, 30)
    for p, r, k in CLASSIFICATION_CASES:
        add("classification", metrics.classification_score, p, r, CLASS_SETS[k])
    for _ in range(60):
        classes = CLASS_SETS[rng.randrange(len(CLASS_SETS))]
        picked = [rng.choice(classes) for _ in range(rng.randint(0, 3))]
        add("classification", metrics.classification_score, " ".join(picked), rng.choice(classes), classes)
    for p, r in RETRIEVAL_CASES:
        add("retrieval", metrics.retrieval_score, p, r)
    for p, r in RETRIEVAL_ZH_CASES:
        add("retrieval_zh", metrics.retrieval_zh_score, p, r)
    for p, r in COUNT_CASES:
        add("count", metrics.count_score, p, r)
    for _ in range(40):
        p = random_text(rng, ["1", "2", "12", "Paragraph 2", "Paragraph 12", "x", "段落2", "3.5", "٢"], 5)
        add("count", metrics.count_score, p, rng.choice(["1", "2", "12"]))
        add("retrieval", metrics.retrieval_score, p, "Paragraph " + rng.choice(["1", "2", "12"]))
    for p, r in CODE_CASES:
        add("code_sim", metrics.code_sim_score, p, r)
    for _ in range(150):
        p = random_code(rng, 40)
        r = "".join(mutate(rng, list(p.replace("\n", "")), "xy=()+1 é")) if rng.random() < 0.7 else random_code(rng, 30)
        add("code_sim", metrics.code_sim_score, p, r.replace("\n", ""))
    for _ in range(12):  # long lines: difflib's autojunk (b of 200+ characters)
        p = random_code(rng, 150).replace("\n", " ")
        r = "".join(mutate(rng, list(p), "xy=()+1 é")) if rng.random() < 0.7 else random_code(rng, 150)
        add("code_sim", metrics.code_sim_score, p, r.replace("\n", " "))

    # eval.py's scorer over one sample: first-line cut and max over references, x100 rounded to 2.
    dataset_cases = []
    datasets = [
        ("trec", "Location\nNumber", ["Number", "Location"], CLASS_SETS[0]),
        ("trec", "\n\nOther number\nLocation", ["Location"], CLASS_SETS[0]),
        ("triviaqa", "Paris\nThe answer is London", ["London", "Paris"], None),
        ("triviaqa", "\nthe London\nParis", ["Paris"], None),
        ("samsum", "Tom meets Ann.\nThey talk.", ["Tom meets Ann and they talk."], None),
        ("lsht", "时政\n体育", ["体育"], CLASS_SETS[1]),
        ("narrativeqa", "He went to Paris\nwith Ann", ["Paris", "to Paris with Ann"], None),
        ("hotpotqa", "", ["yes"], None),
        ("gov_report", "The report. It says things.", ["It says things.", "The report says."], None),
        ("passage_count", "12", ["12"], None),
        ("passage_retrieval_en", "Paragraph 3\nParagraph 4", ["Paragraph 4"], None),
        ("passage_retrieval_zh", "段落3", ["段落3"], None),
        ("lcc", "# c\nx = 1", ["x = 1"], None),
        ("repobench-p", "\n\nreturn x", ["return y", "return x"], None),
    ]
    for dataset, prediction, answers, all_classes in datasets:
        dataset_cases.append({"dataset": dataset, "prediction": prediction, "answers": answers,
                              "all_classes": all_classes,
                              "expected_x100": lb_eval.scorer(dataset, [prediction], [answers], all_classes)})

    # RULER string matching, predictions cleaned as kvpress does:
    # np_pattern = re.compile(r"[\x00-\x1f]"); x -> np_pattern.sub("", x.strip()).strip()
    np_pattern = re.compile(r"[\x00-\x1f]")
    ruler_cases = []
    ruler_inputs = [
        ("The special magic number is 1234567.", ["1234567"]),
        ("numbers: 12\n34 and 99", ["1234", "99", "77"]),
        ("ABC-Def", ["abc-def"]),
        ("", ["x"]),
        ("İstanbul ΣΟΦΟΣ", ["i̇stanbul", "σοφος"]),
        ("tab\tseparated", ["tabseparated"]),
        ("  leading", ["leading", " leading"]),
        ("Answer: Paris", ["paris", "France"]),
        ("v1 v2 v3", ["v1", "v2", "v3", "v4"]),
    ]
    for prediction, refs in ruler_inputs:
        cleaned = np_pattern.sub("", prediction.strip()).strip()
        ruler_cases.append({"prediction": prediction, "references": refs,
                            "string_match_all_x100": ruler.string_match_all([cleaned], [refs]),
                            "string_match_part_x100": ruler.string_match_part([cleaned], [refs])})

    # kvpress needle_in_haystack: the needle is the hypothesis, the answer the reference.
    needle = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
    niah_cases = []
    answers = ["The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.",
               "Eat a sandwich in Dolores Park. On a sunny day.", "I don't know.", "", " . ",
               "  The best thing is to sit in Dolores Park.  "]
    for answer in answers:
        case = {"prediction": answer, "needle": needle}
        try:
            case["expected"] = Rouge().get_scores(needle.strip(), answer.strip())[0]["rouge-l"]["f"]
        except Exception as e:
            case["raises"] = type(e).__name__
        niah_cases.append(case)

    versions = {name: metadata.version(name) for name in ["rouge", "fuzzywuzzy", "jieba", "numpy"]}
    versions["python"] = platform.python_version()
    fixture = {
        "generator": "tests/reference/eval/make_longbench_metric_fixture.py",
        "sources": {"longbench": "THUDM/LongBench LongBench/metrics.py + eval.py (imported)",
                    "ruler": "NVIDIA/RULER scripts/eval/synthetic/constants.py (imported), kvpress cleaning",
                    "niah": "kvpress evaluation/benchmarks/needle_in_haystack/calculate_metrics.py (rouge call)"},
        "versions": versions,
        "cases": cases,
        "dataset_cases": dataset_cases,
        "ruler_cases": ruler_cases,
        "niah_cases": niah_cases,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} metric cases, {len(dataset_cases)} dataset, {len(ruler_cases)} ruler, "
          f"{len(niah_cases)} niah cases to {args.output}")


if __name__ == "__main__":
    main()
