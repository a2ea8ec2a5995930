"""The built-in demonstrations ship with the package and cover InstructGPT's use cases."""

from collections import Counter

from instructrl.builtin import load_demonstrations
from instructrl.records import CATEGORIES
from instructrl.sft.data import to_conversations


def test_builtin_demo_set():
    demos = load_demonstrations("builtin:demo")  # every record validated on read
    assert len(demos) >= 200
    cats = Counter(d.category for d in demos)
    assert set(cats) == set(CATEGORIES) and min(cats.values()) >= 15
    assert len({d.user_id for d in demos}) >= 30
    types = Counter(d.type for d in demos)
    assert types["few-shot"] >= 10 and types["chat"] >= 10
    assert len({d.id for d in demos}) == len(demos)
    convs = to_conversations(demos, variants=2, k=3, seed=0)
    assert len(convs) > len(demos)  # few-shot demonstrations expand into several points
    assert all(c[-1]["role"] == "assistant" and c[-1]["content"].strip() for c in convs)
