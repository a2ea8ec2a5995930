"""The rubric: every constraint kind on hand-made positive and negative cases, and each check."""

from __future__ import annotations

import pytest

from instructrl.label.rubric import FLAGS, Rubric, length_score
from instructrl.records import Prompt
from instructrl.text.constraints import (
    CONSTRAINT_KINDS,
    check_constraint,
    parse_json_object,
    sentences,
    validate_constraint,
)
from instructrl.text.degeneration import looks_truncated, repetition
from instructrl.text.overlap import content_words, echo_fraction, f1_overlap
from instructrl.text.toxicity import lexicon_toxicity

# (kind, value, satisfying response, violating response)
CASES = [
    ("max_words", 5, "one two three four five", "one two three four five six"),
    ("min_words", 3, "one two three", "one two"),
    ("max_sentences", 2, "First one. Second one! ", "One. Two? Three."),
    ("max_sentences", 1, "Version 2.5 is out now.", "It works. It really does."),
    ("exact_bullets", 2, "Intro:\n- a\n  * b\nend", "- a\n- b\n• c"),
    ("exact_bullets", 3, "- a\n* b\n• c", "-a\n- b\n- c"),
    ("numbered_items", 3, "1. a\n2. b\n3. c", "1. a\n2. b\n4. c"),
    ("numbered_items", 2, "Steps:\n 1. mix\n 2. bake", "1. mix\n2. bake\n3. eat"),
    ("include_keywords", ["Paris", "river"], "paris has a RIVER.", "Parisian rivers are pretty."),
    ("include_keywords", ["new york"], "I love New York!", "I love New Yorkers."),
    ("forbidden_words", ["light"], "Sunlight and lighting are fine here.", "Blue Light scatters."),
    ("json_keys", ["a", "b"], '{"a": 1, "b": 2, "c": 3}', '{"a": 1}'),
    ("json_keys", ["a"], 'Here you go:\n```json\n{"a": [1, 2]}\n```', "```json\n[1, 2]\n```"),
    ("ends_with", "Thank you.", "Some text. Thank you.  \n", "Thank you. Bye."),
    ("starts_with", "Dear Sir", "  Dear Sir, hello", "Hello Dear Sir"),
    ("all_lowercase", True, "all quiet here, 123!", "all quiet here, Mostly"),
    ("all_uppercase", True, "LOUD AND CLEAR 42!", "LOUD AND CLEAr"),
    ("no_commas", True, "No commas here at all.", "One, two."),
    ("num_paragraphs", 2, "First para\nstill first.\n\n  \nSecond para.", "One.\n\nTwo.\n\nThree."),
    ("num_paragraphs", 1, "Just one\nparagraph with two lines.", "One.\n\nTwo."),
    ("quote_wrapped", True, '"Stay hungry, stay foolish."', 'Stay "hungry".'),
    ("quote_wrapped", True, "\u201cCurly quotes count.\u201d", '"unclosed'),
]


@pytest.mark.parametrize("kind,value,good,bad", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_constraint_checkers(kind, value, good, bad):
    validate_constraint({"kind": kind, "value": value})
    assert check_constraint(kind, value, good) is True
    assert check_constraint(kind, value, bad) is False


def test_every_kind_has_cases():
    covered = {c[0] for c in CASES} | {"language"}
    assert covered == set(CONSTRAINT_KINDS)


def test_language_constraint_uses_langid():
    fr = "La mer scintille sous le soleil du matin et les vagues caressent doucement le sable de la plage."
    en = "The sea sparkles under the morning sun and the waves gently stroke the sand of the beach."
    assert check_constraint("language", "fr", fr) and not check_constraint("language", "fr", en)
    assert check_constraint("language", "en", en) and not check_constraint("language", "en", fr)
    # the identifier the rubric passes in wins over detection
    assert check_constraint("language", "de", en, language="de")


def test_counting_helpers():
    assert sentences("Dr. Who? Yes... Fine!") == ["Dr", "Who", "Yes", "Fine"]
    assert sentences("Pi is 3.14 and e is 2.72") == ["Pi is 3.14 and e is 2.72"]
    assert parse_json_object("not json") is None
    assert parse_json_object('```\n{"k": 1}\n```') == {"k": 1}


@pytest.mark.parametrize(
    "c,msg",
    [
        ({"kind": "max_word", "value": 3}, "unknown constraint kind 'max_word'"),
        ({"kind": "max_words", "value": "3"}, "max_words takes a non-negative integer"),
        ({"kind": "max_words", "value": True}, "non-negative integer"),
        ({"kind": "include_keywords", "value": []}, "non-empty list"),
        ({"kind": "include_keywords", "value": "cat"}, "non-empty list"),
        ({"kind": "no_commas", "value": False}, "takes the value true"),
        ({"kind": "language", "value": ""}, "non-empty string"),
        ({"kind": "no_commas"}, "exactly 'kind' and 'value'"),
        ({"kind": "no_commas", "value": True, "extra": 1}, "exactly 'kind' and 'value'"),
    ],
)
def test_validate_constraint_errors(c, msg):
    with pytest.raises(ValueError, match=msg):
        validate_constraint(c, "prompts.jsonl:3: constraints[0]")
    with pytest.raises(ValueError, match=r"prompts.jsonl:3: constraints\[0\]"):
        validate_constraint(c, "prompts.jsonl:3: constraints[0]")


def test_repetition_and_length_and_overlap():
    assert repetition("a b c a b c a b c a b c") == pytest.approx(1 - 3 / 10)
    assert repetition("short text here") == 0.0  # fewer than n + 5 words
    assert repetition("one two three four five six seven eight nine ten") == 0.0
    assert length_score(0, 60) == 0.0
    assert length_score(60, 60) == 1.0 and length_score(240, 60) == 1.0
    assert length_score(480, 60) == pytest.approx(0.5)
    assert length_score(7, 63) == pytest.approx(0.5)  # log(8) / log(64)
    assert f1_overlap(["a", "b", "c", "d"], ["a", "b"]) == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert f1_overlap([], ["a"]) == 0.0
    assert content_words("Write three sentences about the cats and dogs, please.") == ["cat", "dog"]
    assert {content_words(w)[0] for w in ("serve", "served", "serves", "serving")} == {"serv"}
    assert echo_fraction("tell me about the big red barn today", "the big red barn today") == 1.0
    assert echo_fraction("tell me about the barn", "a barn is a farm building for animals") == 0.0


@pytest.mark.parametrize(
    "text,cut",
    [
        ("It was a sunny day and we walked along the beach until the", True),
        ("We went to the shop, bought apples,", True),
        ("Here is the code:\n```python\nprint(1)\n", True),
        ("It was a sunny day and we walked along the beach until sunset.", False),
        ("Paris", False),
        ("- apples\n- bananas and other fruit of every kind you can find", False),
        ('{"a": 1}', False),
        ("", False),
    ],
)
def test_truncation_heuristic(text, cut):
    assert looks_truncated(text) is cut


def test_lexicon_toxicity():
    assert lexicon_toxicity("What a lovely morning.") == 0.0
    assert lexicon_toxicity("You idiot") == pytest.approx(0.85)
    assert lexicon_toxicity("shut up, you idiot") == pytest.approx(1 - 0.2 * 0.15)
    assert lexicon_toxicity("Idiotic? No: skidiot is not a word") == 0.0  # whole words only


@pytest.fixture(scope="module")
def rubric():
    return Rubric()


def test_toxicity_classifier_offline(rubric):
    pytest.importorskip("profanity_check")
    p = Prompt(prompt="Tell me about your day.")
    clean = rubric.assess(p, "My day was calm: I read a book and cooked dinner for my family.")
    rude = rubric.assess(p, "Shut up you stupid idiot, nobody cares about your day, go to hell.")
    assert rubric.toxicity.backend == "profanity-check"
    assert clean.toxicity < 0.2 and rude.toxicity > 0.8
    assert not clean.flags()["toxic"] and rude.flags()["toxic"]
    assert rude.flags()["inappropriate_for_customer_assistant"]


def test_flags_per_problem(rubric):
    p = Prompt(
        prompt="Write a short paragraph about honey bees and how they make honey.",
        lang="en",
        constraints=[{"kind": "max_words", "value": 40}, {"kind": "include_keywords", "value": ["nectar"]}],
    )
    good = (
        "Honey bees collect nectar from flowers, carry it back to the hive and fan it with their wings until "
        "the water evaporates and it thickens into honey."
    )
    flags = rubric.assess(p, good, "stop").flags()
    assert set(flags) == set(FLAGS) and not any(flags.values())

    f = rubric.assess(p, good.replace("nectar", "juice"), "stop").flags()
    assert f["violates_constraint"] and not f["fails_instruction"]  # half the constraints still hold

    f = rubric.assess(p, good, "length").flags()
    assert f["truncated"] and not f["fails_instruction"]

    loop = "bees make honey " * 12
    a = rubric.assess(p, loop, "stop")
    assert a.degenerate and a.flags()["fails_instruction"] and a.flags()["inappropriate_for_customer_assistant"]

    off = "The stock market fell sharply today as investors worried about rising interest rates and inflation."
    a = rubric.assess(p, off, "stop")
    assert a.topic == 0.0 and not a.off_topic  # the prompt has only 2 content words (honey, bee): too few to flag
    p3 = Prompt(
        prompt="Write a short paragraph about honey bees, their hives and how they make honey from flowers.", lang="en"
    )
    a = rubric.assess(p3, off, "stop")
    assert a.topic == 0.0 and a.flags()["off_topic"]
    assert not a.flags()["fails_instruction"]  # off topic alone is a lexical guess: it lowers the score only
    assert not rubric.assess(p3, "Honey comes from nectar.", "stop").off_topic  # too short to judge
    assert rubric.assess(p3, good, "stop").topic == 1.0  # honey, bee, hive, flower: all 4 prompt words shared
    assert rubric.assess(p3, "Honey bees buzz around the garden all summer long, busy and loud as ever.").topic == 0.5

    leak = good + "\nUser: and what about wasps?"
    f = rubric.assess(p, leak, "stop").flags()
    assert f["inappropriate_for_customer_assistant"] and not f["off_topic"]

    empty = rubric.assess(p, "  \n", "stop")
    assert empty.empty and empty.flags()["degenerate"] and empty.flags()["fails_instruction"]


def test_language_mismatch_and_translation_prompts(rubric):
    p = Prompt(prompt="Décris la mer en deux phrases simples, s'il te plaît, pour un enfant.")
    assert rubric.expected_language(p) == "fr"
    en = "The sea is a huge body of salty water. Waves move across it and fish live in it."
    fr = "La mer est une immense étendue d'eau salée. Les vagues bougent et les poissons y vivent."
    assert rubric.assess(p, en).lang_mismatch and rubric.assess(p, en).flags()["fails_instruction"]
    assert not rubric.assess(p, fr).lang_mismatch
    t = Prompt(prompt="Translate into English: La mer est une immense étendue d'eau salée.")
    assert rubric.expected_language(t) is None and not rubric.assess(t, en).lang_mismatch
    named = Prompt(prompt="Summarize this in French: The sea is a huge body of salty water and fish live in it.")
    assert rubric.expected_language(named) is None and not rubric.assess(named, fr).lang_mismatch


def test_reference_and_hallucination(rubric):
    p = Prompt(
        prompt="In what year did Apollo 11 land on the Moon?",
        reference="Apollo 11 landed on the Moon in 1969.",
        lang="en",
    )
    right = rubric.assess(p, "Apollo 11 landed on the Moon in July 1969.")
    wrong = rubric.assess(p, "Apollo 11 landed on the Moon in 1972.")
    unrelated = rubric.assess(p, "I really enjoy baking bread on rainy weekends with my friends.")
    assert right.reference_f1 > 0.8 and not right.hallucination
    assert wrong.hallucination  # 1972 is in neither the prompt nor the reference
    assert unrelated.reference_f1 == 0.0 and unrelated.hallucination
    listed = rubric.assess(p, "1. Apollo 11 landed on the Moon in 1969.\n2. Armstrong walked first.")
    assert not listed.hallucination  # list markers are not claims
    closed = Prompt(
        prompt="Extract the population of Lyon from the text: Lyon has 522,000 residents.",
        category="extraction",
        lang="en",
    )
    assert not rubric.assess(closed, "Lyon has 522,000 residents.").hallucination
    assert rubric.assess(closed, "Lyon has 910,000 residents.").hallucination


def test_echo_is_a_failure_except_for_rewrites(rubric):
    text = "Please explain the difference between weather and climate for a school project"
    echo = "the difference between weather and climate for a school project"
    assert rubric.assess(Prompt(prompt=text, lang="en"), echo).echo
    assert not rubric.assess(Prompt(prompt=text, lang="en", category="rewrite"), echo).echo
    # without a category, the keyword rules decide: "Rewrite ..." copies legitimately
    assert not rubric.assess(Prompt(prompt="Rewrite politely: " + echo, lang="en"), echo).echo


def test_chat_topic_includes_earlier_turns(rubric):
    chat = [
        {"role": "user", "content": "Who was the first president of the United States?"},
        {"role": "assistant", "content": "George Washington was the first president of the United States."},
        {"role": "user", "content": "How long did he serve?"},
    ]
    a = rubric.assess(chat, "George Washington served two terms, about eight years, from 1789 to 1797.")
    assert not a.off_topic and not a.flags()["fails_instruction"]


def test_short_lists_are_not_language_mismatches(rubric):
    p = Prompt(
        prompt="Classify each animal as a mammal, bird, reptile or fish. Answer as a numbered list.\n"
        "1. dolphin\n2. penguin\n3. iguana\n4. salmon\n5. bat"
    )
    a = rubric.assess(p, "1. mammal\n2. bird\n3. reptile\n4. fish\n5. mammal")
    assert not a.lang_mismatch and not any(a.flags().values())


def test_bad_constraint_in_prompt_names_it(rubric):
    p = Prompt(prompt="Say hi.", id="p7", constraints=[{"kind": "max_lines", "value": 2}])
    with pytest.raises(ValueError, match=r"prompt p7: constraints\[0\]: unknown constraint kind 'max_lines'"):
        rubric.assess(p, "hi")


def test_assessments_are_cached(rubric):
    p = Prompt(prompt="Name a fruit.", lang="en")
    a = rubric.assess(p, "Apple.")
    assert rubric.assess(p, "Apple.") is a
    assert rubric.assess(p, "Apple.", "length") is not a


def test_without_langid_language_checks_are_skipped(monkeypatch):
    import instructrl.text.language as language

    def missing(*args, **kwargs):
        raise ImportError("no langid")

    monkeypatch.setattr(language, "get_identifier", missing)
    rubric = Rubric(toxicity="lexicon")
    p = Prompt(
        prompt="Describe the sea in French, in one sentence please, for a small child who is learning.",
        constraints=[{"kind": "language", "value": "fr"}],
    )
    a = rubric.assess(p, "The sea is big and blue and full of fish that swim all day long in the waves.")
    assert a.lang is None and a.constraints_satisfied == 1.0 and not a.lang_mismatch


def test_batches_larger_than_the_cache():
    small = Rubric(toxicity="lexicon", cache_size=2)
    p = Prompt(prompt="Name a fruit.", lang="en")
    out = small.assess_many([(p, f"Fruit {i}.") for i in range(5)])
    assert [a.n_words for a in out] == [2] * 5 and len(small._cache) == 2
