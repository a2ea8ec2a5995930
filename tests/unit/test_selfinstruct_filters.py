"""Every instruction and instance filter, with its reason."""

from __future__ import annotations

from collections import Counter

import pytest

from instructrl.data.selfinstruct.config import FilterConfig
from instructrl.data.selfinstruct.filters import filter_instances, instruction_drop_reason
from instructrl.data.selfinstruct.tasks import Instance

CFG = FilterConfig()


@pytest.mark.parametrize(
    "text,reason",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("Summarize this text.", "too_short"),  # 3 words < 4
        ("Summarize the text below.", None),
        (" ".join(["word"] * 151), "too_long"),
        (" ".join(["word"] * 150), None),
        ("Describe the image in one sentence.", "banned_word"),
        ("Look at the GRAPH and describe the trend.", "banned_word"),
        ("Explain how to go  to the station by bus.", "banned_word"),  # the phrase 'go to', any spacing
        ("Draw a cat using only letters.", "banned_word"),
        ("Explain what a mapping between two sets is.", None),  # 'map' only as a whole word
        ("Write a program that prints the primes below 100.", "banned_prefix"),
        ('"Quote" this sentence back to me please.', "starts_with_punctuation"),
        ("- List three fruits that are red.", "starts_with_punctuation"),
        ("¿Cómo se dice hola en inglés, por favor?", "starts_non_ascii"),
        ("Über alles: translate this phrase to English.", "starts_non_ascii"),
        ("List five countries in South America.", None),
    ],
)
def test_instruction_filters(text, reason):
    assert instruction_drop_reason(text, CFG) == reason


def test_filters_follow_config():
    cfg = FilterConfig(
        min_words=1,
        max_words=3,
        banned_words=["sing"],
        banned_prefixes=[],
        drop_leading_punctuation=False,
        drop_non_ascii_start=False,
    )
    assert instruction_drop_reason("Hello", cfg) is None
    assert instruction_drop_reason("one two three four", cfg) == "too_long"
    assert instruction_drop_reason("Sing a song", cfg) == "banned_word"
    assert instruction_drop_reason("Singing is fun", cfg) is None
    assert instruction_drop_reason("- a list", cfg) is None
    assert instruction_drop_reason("Écrivez un poème", cfg) is None
    with pytest.raises(ValueError):
        FilterConfig(max_rouge_l=1.5)


def test_instance_filters_each_reason():
    instances = [
        Instance("2 + 2", "4"),
        Instance("x", "  "),  # empty output
        Instance("y", "None."),  # a placeholder is no output either
        Instance("z", "```\n```"),  # nor is text without a letter or digit
        Instance("w", "Label the sentiment!"),  # the instruction again
        Instance("same", "same"),  # input equals output
        Instance("2 + 2", "4"),  # duplicate
        Instance("3 + 3", "6"),
        Instance("3 + 3", "seven"),  # conflicts with the one above: both go
        Instance("", "A haiku."),
        Instance("", "Another haiku."),  # no input: several outputs are fine
        Instance("long", "y" * 5001),  # too long
    ]
    kept, drops = filter_instances(instances, CFG, instruction="Label the  sentiment.")
    assert kept == [Instance("2 + 2", "4"), Instance("", "A haiku."), Instance("", "Another haiku.")]
    assert drops == Counter(
        empty_output=3,
        output_repeats_instruction=1,
        input_equals_output=1,
        duplicate_instance=1,
        conflicting_outputs=2,
        too_long=1,
    )


def test_instance_fields_are_stripped():
    kept, drops = filter_instances([Instance("  a  ", " b\n")], CFG)
    assert kept == [Instance("a", "b")] and not drops


def test_placeholders():
    from instructrl.data.selfinstruct.filters import is_placeholder

    for text in ["none", "None.", " N/A ", "<noinput>", "'none'", "-", "NULL", "none;"]:
        assert is_placeholder(text), text
    for text in ["", "no", "None of the above", "nonetheless"]:
        assert not is_placeholder(text), text
