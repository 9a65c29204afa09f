#!/usr/bin/env python3
"""Writes data/qa/alice_squad.json and data/qa/alice_hotpotqa.json: small stand-ins for SQuAD v2
and HotpotQA (RULER's qa_1 and qa_2 sources) built on the shipped public-domain haystack,
data/haystack.txt ("Alice's Adventures in Wonderland", chapters I-XII, one paragraph per line
block; see data/HAYSTACK_PROVENANCE.md).

The questions and answers below were written by hand for this project by reading the book; they
are not taken from SQuAD, HotpotQA or any other data set. Each question names its evidence by a
verbatim snippet ("anchor") that must occur in exactly one paragraph of the book; the answer must
be a span of that anchor. The script checks every anchor and answer against data/haystack.txt and
stops with an error if one does not match, so the files can only be written from the exact text.

alice_squad.json (SQuAD v2 layout): one article per chapter ("Alice ch.III") holding every
paragraph of that chapter, so that RULER's qa_1 finds the article's other paragraphs (and then the
rest of the book) as distractors; only the paragraphs with questions have qas.

alice_hotpotqa.json (HotpotQA dev list layout): each two-hop question has the two supporting
paragraphs plus eight distractor paragraphs (HotpotQA's distractor setting has ten paragraphs),
drawn with a fixed seed, without repeats across questions as long as the book allows, never
containing the answer. Titles are "Alice ch.III p.12" (chapter, paragraph number in the chapter);
the sentences of a paragraph join back into it exactly (HotpotQA keeps the leading space).

Usage: python3 tests/reference/eval/make_alice_qa.py [--haystack FILE] [--out-dir DIR]
Python 3 standard library only; the output is byte-identical on every run.
"""
import argparse
import json
import pathlib
import random
import re
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]
ROMAN = ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII"]
HOTPOT_DISTRACTORS = 8
SEED = 20240607

# ---------------------------------------------------------------------------------------------
# SQuAD style: (question, answer, anchor). The anchor is a verbatim snippet of ONE paragraph,
# unique in the book, that contains the answer; the answer is 1-5 words of it.
SQUAD = [
    # Chapter I
    ("What was written on the label of the jar Alice took from a shelf while falling down the well?",
     "ORANGE MARMALADE", "it was labelled 'ORANGE MARMALADE'"),
    ("While falling, how many miles down did Alice think the centre of the earth would be?",
     "four thousand miles", "that would be four thousand miles down"),
    ("What was the little three-legged table in the hall made of?",
     "solid glass", "all made of solid glass"),
    ("How high was the little door Alice found behind the low curtain?",
     "fifteen inches", "a little door about fifteen inches high"),
    ("How tall was Alice after she finished the bottle labelled DRINK ME?",
     "ten inches", "she was now only ten inches high"),
    ("What words were marked in currants on the very small cake Alice found in a glass box?",
     "EAT ME", "the words 'EAT ME' were beautifully marked in currants"),
    # Chapter II
    ("How tall was Alice when her head struck against the roof of the hall?",
     "nine feet", "she was now more than nine feet high"),
    ("How deep was the pool that formed around Alice from her tears?",
     "four inches", "about four inches deep"),
    ("According to Alice's muddled multiplication table, what is four times five?",
     "twelve", "four times five is twelve"),
    ("In Alice's muddled geography, London is the capital of which city?",
     "Paris", "London is the capital of Paris"),
    ("What made Alice shrink while she was in the hall with the Rabbit's gloves?",
     "the fan", "the cause of this was the fan she was holding"),
    ("What was the first sentence in Alice's French lesson-book?",
     "Ou est ma chatte", "'Ou est ma chatte?' which was the first sentence"),
    ("How much did the farmer say his little terrier was worth?",
     "hundred pounds", "it's worth a hundred pounds"),
    # Chapter III
    ("In the Mouse's history, who was the patriotic archbishop of Canterbury?",
     "Stigand", "even Stigand, the patriotic archbishop of Canterbury"),
    ("What kind of race did the Dodo say was the best thing to get everyone dry?",
     "Caucus-race", "the best thing to get us dry would be a Caucus-race"),
    ("What did Alice pull out of her pocket and hand round as prizes?",
     "comfits", "pulled out a box of comfits"),
    ("What did the Dodo solemnly present to Alice as her own prize?",
     "thimble", "the Dodo solemnly presented the thimble"),
    # Chapter IV
    ("What name was engraved on the brass plate of the neat little house Alice came upon?",
     "W. RABBIT", "with the name 'W. RABBIT' engraved upon it"),
    ("What did the White Rabbit call Alice when he mistook her for someone else?",
     "Mary Ann", "'Why, Mary Ann, what ARE you doing out here?"),
    ("What did Pat say he was doing when the Rabbit called for him?",
     "Digging for apples", "Digging for apples, yer honour!"),
    ("What were the pebbles that rattled in at the window turning into?",
     "little cakes", "the pebbles were all turning into little cakes"),
    ("What was the caterpillar on top of the mushroom smoking?",
     "hookah", "quietly smoking a long hookah"),
    # Chapter V
    ("Which poem did the Caterpillar tell Alice to repeat?",
     "YOU ARE OLD, FATHER WILLIAM", "'Repeat, \"YOU ARE OLD, FATHER WILLIAM,\"' said the Caterpillar"),
    ("In the poem, what did the ointment that kept Father William's limbs supple cost?",
     "one shilling", "By the use of this ointment--one shilling the box"),
    ("In the poem, what did Father William balance on the end of his nose?",
     "eel", "Yet you balanced an eel on the end of your nose"),
    ("How tall was the Caterpillar?",
     "three inches", "(it was exactly three inches high)"),
    ("How long had the Pigeon gone without a wink of sleep?",
     "three weeks", "I haven't had a wink of sleep these three weeks"),
    # Chapter VI
    ("What game did the Queen's invitation to the Duchess ask her to play?",
     "croquet", "'For the Duchess. An invitation from the Queen to play croquet.'"),
    ("What was the cook stirring in the Duchess's kitchen?",
     "cauldron", "stirring a large cauldron which seemed to be full of soup"),
    ("What kind of cat did the Duchess say was grinning on her hearth?",
     "Cheshire cat", "'It's a Cheshire cat,' said the Duchess"),
    ("What did Alice tell the Cat the Duchess's baby had turned into?",
     "pig", "'It turned into a pig,' Alice quietly said"),
    ("Which month did Alice say it was when she set off to see the March Hare?",
     "May", "perhaps as this is May it won't be raving mad"),
    ("What was the roof of the March Hare's house thatched with?",
     "fur", "the roof was thatched with fur"),
    # Chapter VII
    ("The Hatter's riddle asks why a raven is like what?",
     "writing-desk", "'Why is a raven like a writing-desk?'"),
    ("What day of the month did Alice say it was when the Hatter asked her?",
     "fourth", "and then said 'The fourth.'"),
    ("What time has it always been for the Hatter since the Queen said he was murdering the time?",
     "six o'clock", "It's always six o'clock now."),
    ("What were the names of the three little sisters in the Dormouse's story?",
     "Elsie, Lacie, and Tillie", "their names were Elsie, Lacie, and Tillie"),
    ("According to the Dormouse, what did the three sisters live on?",
     "treacle", "'They lived on treacle,' said the Dormouse"),
    # Chapter VIII
    ("What colour were the roses on the rose-tree at the entrance of the Queen's garden before the gardeners painted them?",
     "white", "the roses growing on it were white"),
    ("What had a gardener brought the cook instead of onions?",
     "tulip-roots", "for bringing the cook tulip-roots instead of onions"),
    ("What did the Knave of Hearts carry on a crimson velvet cushion in the procession?",
     "King's crown", "carrying the King's crown on a crimson velvet cushion"),
    ("In the Queen's croquet game, what were the mallets?",
     "flamingoes", "the mallets live flamingoes"),
    ("What had the Duchess done to the Queen that got her sentenced to execution?",
     "boxed the Queen's ears", "'She boxed the Queen's ears--'"),
    # Chapter IX
    ("According to the Duchess, what large mine was near where she and Alice were walking?",
     "mustard-mine", "there's a large mustard-mine near here"),
    ("What did the Mock Turtle's class call their old Turtle master?",
     "Tortoise", "The master was an old Turtle--we used to call him Tortoise"),
    ("What kind of creature was the Drawling-master at the Mock Turtle's school?",
     "conger-eel", "the Drawling-master was an old conger-eel"),
    ("How many hours of lessons did the Mock Turtle's class have on the first day?",
     "Ten hours", "'Ten hours the first day,' said the Mock Turtle"),
    # Chapter X
    ("In the whiting's song, which creature is close behind, treading on the whiting's tail?",
     "porpoise", "There's a porpoise close behind us"),
    ("According to the Gryphon, what are boots and shoes under the sea made of?",
     "Soles and eels", "'Soles and eels, of course,' the Gryphon replied"),
    ("Which song did the Gryphon ask the Mock Turtle to sing for Alice?",
     "Turtle Soup", "Sing her \"Turtle Soup,\" will you, old fellow?"),
    ("In Alice's garbled verse, which two animals were sharing a pie?",
     "Owl and the Panther", "How the Owl and the Panther were sharing a pie"),
    # Chapter XI
    ("On what did the twelve jurors write at the trial?",
     "slates", "The twelve jurors were all writing very busily on slates"),
    ("When the King asked the Hatter when he began his tea, what date did the Hatter give?",
     "Fourteenth of March", "'Fourteenth of March, I think it was,' he said"),
    ("What did the Duchess's cook carry in her hand when she came in as a witness?",
     "pepper-box", "She carried the pepper-box in her hand"),
    ("What did the cook answer when the King asked what tarts are made of?",
     "Pepper", "'Pepper, mostly,' said the cook"),
    # Chapter XII
    ("What did upsetting the jurymen onto the crowd remind Alice of?",
     "goldfish", "reminding her very much of a globe of goldfish"),
    ("What number was the rule the King read out of his note-book at the trial?",
     "Forty-two", "read out from his book, 'Rule Forty-two."),
    ("How much did Alice offer to anyone on the jury who could explain the verses?",
     "sixpence", "'I'll give him sixpence."),
    ("What was the Knave entirely made of?",
     "cardboard", "being made entirely of cardboard"),
    ("What did the Queen throw at the Lizard during the trial?",
     "inkstand", "throwing an inkstand at the Lizard"),
]

# ---------------------------------------------------------------------------------------------
# HotpotQA style, two hops: (question, answer, anchor of the bridge paragraph, anchor of the
# answer paragraph). Each anchor is unique in the book and marks the supporting sentence(s);
# the answer is a span of the second anchor. The first paragraph identifies who or what the
# question describes, the second holds the answer.
HOTPOT = [
    ("What kind of animal was the creature that Alice kicked up the chimney of the White Rabbit's house?",
     "Lizard",
     "then, saying to herself 'This is Bill,' she gave one sharp kick",
     "The poor little Lizard, Bill, was in the middle"),
    ("At the trial, what did the Queen throw at the juror whose squeaking pencil Alice had taken away?",
     "inkstand",
     "the poor little juror (it was Bill, the Lizard) could not make out",
     "throwing an inkstand at the Lizard as she spoke"),
    ("What was the roof thatched with on the house of the creature who, the Cheshire Cat said, lived in the direction opposite to the Hatter?",
     "fur",
     "'lives a Hatter: and in THAT direction,' waving the other paw, 'lives a March Hare.",
     "the roof was thatched with fur"),
    ("What were the chimneys shaped like on the house of the creature the Hatter quarrelled with last March?",
     "ears",
     "We quarrelled last March--just before HE went mad, you know--' (pointing with his tea spoon at the March Hare,)",
     "the chimneys were shaped like ears"),
    ("On what date did the first witness at the Knave's trial say he had begun his tea?",
     "Fourteenth of March",
     "The first witness was the Hatter.",
     "'Fourteenth of March, I think it was,' he said."),
    ("What does the grinning cat on the Duchess's hearth say it does when it is pleased?",
     "growl",
     "'It's a Cheshire cat,' said the Duchess",
     "Now I growl when I'm pleased, and wag my tail when I'm angry."),
    ("What kind of creature was the master who, the Mock Turtle said, taught Laughing and Grief?",
     "crab",
     "he taught Laughing and Grief, they used to say.",
     "I went to the Classics master, though. He was an old crab, HE was."),
    ("How many hours of lessons did the pupils of the school whose master they called Tortoise have on the first day?",
     "Ten hours",
     "The master was an old Turtle--we used to call him Tortoise",
     "'Ten hours the first day,' said the Mock Turtle"),
    ("What were the names of the three sisters in the story told by the creature that sat asleep between the March Hare and the Hatter?",
     "Elsie, Lacie, and Tillie",
     "a Dormouse was sitting between them, fast asleep",
     "their names were Elsie, Lacie, and Tillie"),
    ("What did the woman who threw a frying-pan after the Duchess carry in her hand when she came to court as a witness?",
     "pepper-box",
     "The cook threw a frying-pan after her as she went out",
     "She carried the pepper-box in her hand"),
    ("In the Queen's procession, what did the prisoner later accused of stealing the Queen's tarts carry on a velvet cushion?",
     "King's crown",
     "The Knave of Hearts, he stole those tarts",
     "carrying the King's crown on a crimson velvet cushion"),
    ("How tall was the creature that told Alice one side of the mushroom would make her grow taller?",
     "three inches",
     "'One side will make you grow taller, and the other side will make you grow shorter.'",
     "(it was exactly three inches high)"),
    ("What did the old man in the poem that the Caterpillar told Alice to repeat balance on the end of his nose?",
     "eel",
     "'Repeat, \"YOU ARE OLD, FATHER WILLIAM,\"' said the Caterpillar",
     "Yet you balanced an eel on the end of your nose"),
    ("Which animals did the family of the creature whose 'long and sad tale' Alice took for a tail always hate?",
     "cats",
     "'It IS a long tail, certainly,' said Alice, looking down with wonder at the Mouse's tail",
     "Our family always HATED cats"),
    ("What instrument did the creature who dropped the white kid gloves and the fan in the hall blow at the trial?",
     "trumpet",
     "The Rabbit started violently, dropped the white kid gloves and the fan",
     "the White Rabbit blew three blasts on the trumpet, and then unrolled the parchment scroll"),
    ("In the game to which the Fish-Footman brought the Duchess an invitation, what did the Queen's players use as mallets?",
     "flamingoes",
     "An invitation from the Queen to play croquet.",
     "the balls were live hedgehogs, the mallets live flamingoes"),
    ("What did the bird who presented Alice with a thimble say was the best thing to get the party dry?",
     "Caucus-race",
     "the Dodo solemnly presented the thimble",
     "the best thing to get us dry would be a Caucus-race"),
    ("What did the creature sitting sad and lonely on a little ledge of rock say he once was?",
     "real Turtle",
     "the Mock Turtle in the distance, sitting sad and lonely on a little ledge of rock",
     "'I was a real Turtle.'"),
    ("What kind of creature taught Drawling at the school of the creature who said he was once a real Turtle?",
     "conger-eel",
     "'I was a real Turtle.'",
     "the Drawling-master was an old conger-eel"),
    ("Which poem did the creature that Alice and the Queen found lying fast asleep in the sun tell Alice to stand up and repeat?",
     "THE VOICE OF THE SLUGGARD",
     "They very soon came upon a Gryphon, lying fast asleep in the sun.",
     "'Stand up and repeat \"'TIS THE VOICE OF THE SLUGGARD,\"' said the Gryphon."),
    ("What did Alice tell the Cheshire Cat had become of the baby the Duchess was nursing on a three-legged stool?",
     "pig",
     "the Duchess was sitting on a three-legged stool in the middle, nursing a baby",
     "'It turned into a pig,' Alice quietly said"),
    ("What does the watch that the March Hare dipped into his cup of tea tell, according to Alice?",
     "day of the month",
     "then he dipped it into his cup of tea",
     "It tells the day of the month, and doesn't tell what o'clock it is!"),
    ("How deep was the pool of salt water that Alice slipped into up to her chin, when she first wept it?",
     "four inches",
     "she was in the pool of tears which she had wept when she was nine feet high",
     "about four inches deep"),
    ("According to the creature Alice found on top of the large mushroom, what would the other side make her grow?",
     "shorter",
     "her eyes immediately met those of a large caterpillar, that was sitting on the top",
     "the other side will make you grow shorter"),
]


def fail(message):
    sys.exit("make_alice_qa: " + message)


def read_book(path):
    """[(chapter_number, paragraph_number, text)] without the chapter headings."""
    text = path.read_text(encoding="utf-8")
    paragraphs, chapter, number = [], 0, 0
    for block in text.split("\n\n"):
        block = block.strip("\n")
        if not block:
            continue
        if "\n" in block:
            fail(f"{path}: a paragraph spans several lines: {block[:60]!r}")
        if re.match(r"Chapter [IVXL]+: ", block):
            chapter, number = chapter + 1, 0
            continue
        if chapter == 0:
            fail(f"{path}: text before the first chapter heading")
        number += 1
        paragraphs.append((chapter, number, block))
    if chapter != 12:
        fail(f"{path}: expected 12 chapters, found {chapter}")
    return paragraphs


def title(chapter, number=None):
    base = f"Alice ch.{ROMAN[chapter - 1]}"
    return base if number is None else f"{base} p.{number}"


def find(paragraphs, anchor):
    hits = [i for i, (_, _, text) in enumerate(paragraphs) if anchor in text]
    if len(hits) != 1:
        fail(f"anchor {anchor!r} is in {len(hits)} paragraphs of the book, not exactly one")
    index = hits[0]
    if paragraphs[index][2].count(anchor) != 1:
        fail(f"anchor {anchor!r} occurs more than once in its paragraph")
    return index


def check_answer(answer, anchor, question):
    words = len(answer.split())
    if not 1 <= words <= 5:
        fail(f"answer {answer!r} of {question!r} has {words} words (1-5 wanted)")
    if anchor.count(answer) != 1:
        fail(f"answer {answer!r} of {question!r} is not exactly once in its anchor {anchor!r}")


def split_sentences(text):
    """HotpotQA-style sentences: a new sentence starts after . ! ? (and closing quotes or
    brackets) and a space, before a capital letter or an opening quote; the space stays at the
    start of the next sentence, so that ''.join(sentences) == text."""
    cuts = [m.end() for m in re.finditer(r"[.!?][')\"\]]*(?= ['\"(]?[A-Z])", text)]
    sentences, start = [], 0
    for cut in cuts:
        sentences.append(text[start:cut])
        start = cut
    sentences.append(text[start:])
    if "".join(sentences) != text:
        fail(f"sentence split does not rejoin: {text[:60]!r}")
    return sentences


def sentence_indices(sentences, text, anchor):
    """Indices of the sentences that the anchor overlaps."""
    begin = text.index(anchor)
    end = begin + len(anchor)
    indices, offset = [], 0
    for i, sentence in enumerate(sentences):
        if offset < end and begin < offset + len(sentence):
            indices.append(i)
        offset += len(sentence)
    return indices


def build_squad(paragraphs):
    qas_by_paragraph = {}
    for n, (question, answer, anchor) in enumerate(SQUAD, 1):
        check_answer(answer, anchor, question)
        index = find(paragraphs, anchor)
        text = paragraphs[index][2]
        start = text.index(anchor) + anchor.index(answer)
        if text[start:start + len(answer)] != answer:
            fail(f"answer_start of {question!r} is wrong")
        qas_by_paragraph.setdefault(index, []).append({
            "id": f"alice-squad-{n:03d}",
            "question": question,
            "answers": [{"text": answer, "answer_start": start}],
            "is_impossible": False,
        })
    data = []
    for chapter in range(1, 13):
        article = {"title": title(chapter), "paragraphs": []}
        for i, (ch, _, text) in enumerate(paragraphs):
            if ch == chapter:
                article["paragraphs"].append({"context": text, "qas": qas_by_paragraph.get(i, [])})
        data.append(article)
    return {"version": "v2.0", "data": data}


def build_hotpotqa(paragraphs):
    rng = random.Random(SEED)
    golds = []
    for question, answer, bridge, evidence in HOTPOT:
        check_answer(answer, evidence, question)
        first, second = find(paragraphs, bridge), find(paragraphs, evidence)
        if first == second:
            fail(f"both hops of {question!r} are in the same paragraph")
        golds.append((first, second))
    used = {i for pair in golds for i in pair}
    # Distractors: the book's other paragraphs in a seeded order, dealt out without repeats
    # (the pool starts again only when it runs out).
    pool = [i for i in range(len(paragraphs)) if i not in used]
    rng.shuffle(pool)
    cursor = 0
    items = []
    for n, ((question, answer, bridge, evidence), (first, second)) in enumerate(zip(HOTPOT, golds), 1):
        distractors = []
        tried = 0
        while len(distractors) < HOTPOT_DISTRACTORS:
            if tried > len(pool):
                fail(f"not enough distractor paragraphs for {question!r}")
            candidate = pool[cursor % len(pool)]
            cursor += 1
            tried += 1
            if answer.lower() in paragraphs[candidate][2].lower() or candidate in distractors:
                continue
            distractors.append(candidate)
        chosen = [first, second] + distractors
        rng.shuffle(chosen)
        context = []
        for index in chosen:
            chapter, number, text = paragraphs[index]
            context.append([title(chapter, number), split_sentences(text)])
        supporting = []  # the bridge's sentences first, then the answer's
        for index, anchor in ((first, bridge), (second, evidence)):
            chapter, number, text = paragraphs[index]
            for s in sentence_indices(split_sentences(text), text, anchor):
                supporting.append([title(chapter, number), s])
        items.append({
            "_id": f"alice-hotpot-{n:03d}",
            "question": question,
            "answer": answer,
            "type": "bridge",
            "supporting_facts": supporting,
            "context": context,
        })
    return items


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--haystack", type=pathlib.Path, default=REPO / "data" / "haystack.txt")
    parser.add_argument("--out-dir", type=pathlib.Path, default=REPO / "data" / "qa")
    args = parser.parse_args()

    paragraphs = read_book(args.haystack)
    if len(SQUAD) < 40 or len(HOTPOT) < 20:
        fail("expected at least 40 SQuAD-style and 20 HotpotQA-style questions")
    if len(set(q for q, *_ in SQUAD)) != len(SQUAD) or len(set(q for q, *_ in HOTPOT)) != len(HOTPOT):
        fail("a question is listed twice")

    squad = build_squad(paragraphs)
    hotpot = build_hotpotqa(paragraphs)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {"alice_squad.json": squad, "alice_hotpotqa.json": hotpot}
    for name, value in outputs.items():
        path = args.out_dir / name
        path.write_text(json.dumps(value, ensure_ascii=True, indent=1) + "\n", encoding="utf-8")
    n_paragraphs = sum(len(article["paragraphs"]) for article in squad["data"])
    n_docs = len({entry[0] for item in hotpot for entry in item["context"]})
    print(f"{args.out_dir / 'alice_squad.json'}: {len(SQUAD)} questions, {n_paragraphs} paragraphs in 12 chapter articles")
    print(f"{args.out_dir / 'alice_hotpotqa.json'}: {len(hotpot)} questions, {n_docs} distinct documents")


if __name__ == "__main__":
    main()
