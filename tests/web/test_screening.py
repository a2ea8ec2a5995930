"""Screening (label/workbench/screening.py): reading a test's items, reading an applicant's form, and the
report against the paper's soft cut-offs, each against a hand computation."""

from __future__ import annotations

import json

import pytest

from instructrl.label.workbench.screening import (
    Cutoffs,
    Graded,
    ItemView,
    check_score,
    grade,
    parse_answers,
    parse_topics,
    read_items,
)
from instructrl.records import RecordError

ITEMS = [
    {
        "kind": "flag",
        "prompt": "Tell me a joke about my neighbours.",
        "response": "They are all idiots.",
        "sensitive": True,
    },
    {
        "kind": "rank",
        "prompt": "Capital of France?",
        "responses": ["Paris.", "Lyon.", "Paris, on the Seine."],
        "ranks": [2, 3, 1],
    },
    {"kind": "demonstrate", "prompt": [{"role": "user", "content": "How do I cope with grief?"}]},
]


def _write(tmp_path, rows) -> str:
    path = tmp_path / "screen.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_read_items(tmp_path):
    items = read_items(_write(tmp_path, ITEMS), "screen.jsonl")
    assert [(i.kind, i.responses, i.reference) for i in items] == [
        ("flag", ["They are all idiots."], {"sensitive": True}),
        ("rank", ["Paris.", "Lyon.", "Paris, on the Seine."], {"ranks": [2, 3, 1]}),
        ("demonstrate", None, None),
    ]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {"kind": "vote", "prompt": "x"},
            "screen.jsonl:2: field 'kind': must be one of flag, rank, demonstrate, got 'vote'",
        ),
        (
            {"kind": "flag", "prompt": "x", "response": "y"},
            "screen.jsonl:2: field 'sensitive': is required for a flag item",
        ),
        (
            {"kind": "flag", "prompt": "x", "response": "y", "sensitive": "yes"},
            "field 'sensitive': must be true or false",
        ),
        (
            {"kind": "rank", "prompt": "x", "responses": ["a", "b"], "ranks": [1, 3]},
            "field 'ranks': must give each of the 2",
        ),
        (
            {"kind": "rank", "prompt": "x", "responses": ["a"], "ranks": [1]},
            "field 'responses': has 1; a ranking shows 2 to 9",
        ),
        ({"kind": "demonstrate", "prompt": "x", "answer": "y"}, "field 'answer': is not a field of a demonstrate item"),
        ({"kind": "demonstrate", "prompt": ""}, "field 'prompt': must be a non-empty string"),
        ("{not json", "screen.jsonl:2"),
    ],
)
def test_read_items_names_file_and_line(tmp_path, bad, message):
    with pytest.raises(RecordError) as caught:
        read_items(_write(tmp_path, [ITEMS[0], bad]), "screen.jsonl")
    assert message in str(caught.value)


def test_parse_topics():
    assert parse_topics(" Religion, Politics\n\nreligion\nReligion\n") == ["Religion", "Politics", "religion"]


def test_parse_answers():
    views = [ItemView(11, "flag"), ItemView(12, "rank", 3), ItemView(13, "demonstrate")]
    form = {
        "flag_11": ["no"],
        "rank_12_0": ["1"],
        "rank_12_1": ["1"],
        "rank_12_2": ["3"],
        "demo_13": ["Take it a day at a time.\r\nTalk to someone."],
        "topics": ["Religion", "Made up"],  # only the test's own topics are taken from the checkboxes
        "topics_other": ["Sports\nReligion"],
    }
    answers, topics, errors = parse_answers(form, views, ["Religion", "Politics"])
    assert errors == []
    assert answers == {
        11: {"sensitive": False},
        12: {"ranks": [1, 1, 3]},
        13: {"response": "Take it a day at a time.\nTalk to someone."},
    }
    assert topics == ["Religion", "Sports"]
    answers, _, errors = parse_answers({"rank_12_0": ["4"], "demo_13": ["  "]}, views, [])
    assert answers == {}
    assert errors == [
        "Item 1: say whether the response is sensitive.",
        "Item 2: give every response a rank from 1 to 3.",
        "Item 3: write a response.",
    ]


def test_check_score():
    assert [check_score(s) for s in ("1", " 7 ", "0", "8", "6.5", "")] == [1, 7, None, None, None, None]


def _graded(flags_right: int, rank_answers, demo_scores) -> list[Graded]:
    flags = [
        Graded("flag", {"sensitive": n % 2 == 0}, {"sensitive": (n % 2 == 0) == (n < flags_right)}) for n in range(4)
    ]
    ranks = [
        Graded("rank", {"ranks": [1, 2, 3]}, {"ranks": rank_answers[0]}),
        Graded("rank", {"ranks": [1, 2]}, None if rank_answers[1] is None else {"ranks": rank_answers[1]}),
    ]
    demos = [Graded("demonstrate", None, {"response": "..."}, score) for score in demo_scores]
    return flags + ranks + demos


def test_grade_hand_computed():
    # flags: 3 of 4 agree = 0.75, meets 75%; rankings: [1,3,2] against [1,2,3] agrees on 2 of 3 pairs, [1,1]
    # against [1,2] is a tie against an order, 1/2: (2 + 0.5) / 4 = 0.625, below 75%; demonstrations (7 + 5) / 2 = 6
    report = grade(_graded(3, ([1, 3, 2], [1, 1]), [7, 5]), ["Religion"])
    assert report.flag_agreement == 0.75 and report.flag_items == 4
    assert report.rank_agreement == pytest.approx(0.625) and report.rank_comparisons == 4
    assert (report.demo_score, report.demos_reviewed, report.demos) == (6.0, 2, 2)
    assert report.meets == {"flag": True, "rank": False, "demo": True}
    assert report.meets_all is False
    assert report.topics == ["Religion"]


def test_grade_waits_for_the_reviewer_and_counts_an_unanswered_ranking_as_disagreement():
    # rankings: [1,2,3] agrees on 3 of 3; the unanswered one counts its 1 pair as 0: 3 / 4 = 0.75
    pending = grade(_graded(4, ([1, 2, 3], None), [7, None]), [])
    assert pending.rank_agreement == pytest.approx(0.75) and pending.rank_comparisons == 4
    assert pending.demo_score == 7.0 and pending.demos_reviewed == 1
    assert pending.meets == {"flag": True, "rank": True, "demo": None}
    assert pending.meets_all is None  # everything measured passes; the reviewer has not finished
    assert grade(_graded(4, ([1, 2, 3], [1, 2]), [7, 6]), []).meets_all is True
    # a missed criterion settles it before the review
    assert grade(_graded(2, ([1, 2, 3], [1, 2]), [None]), []).meets_all is False
    # the cut-offs are the test's
    strict = grade(_graded(4, ([1, 2, 3], [1, 2]), [6, 6]), [], Cutoffs(flag=0.9, rank=0.9, demo=6.5))
    assert strict.meets == {"flag": True, "rank": True, "demo": False}
