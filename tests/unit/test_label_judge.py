"""The LLM-judge labeler, against a local OpenAI-compatible stub server (tests/openai_stub.py)."""

from __future__ import annotations

import json
import re

import pytest

from instructrl.label.config import JudgeConfig
from instructrl.label.judge import (
    PAIRWISE_TEMPLATE,
    LLMJudge,
    combine_orders,
    parse_pointwise,
    parse_verdict,
)
from instructrl.label.rubric import FLAGS, Rubric
from instructrl.models.generation import OpenAIError
from instructrl.records import Prompt
from tests.openai_stub import OpenAIStub

_PAIR = re.compile(r"\[Response A\]\n(.*?)\n\n\[Response B\]\n(.*?)\n\nThink briefly", re.DOTALL)
_ONE = re.compile(r"\[Response\]\n(.*?)\n\nAnswer with one JSON", re.DOTALL)


def keyword_judge(text: str) -> str:
    """Prefers the response holding GOOD; Likert 6 for GOOD, else 2; FAKE is a hallucination."""
    m = _PAIR.search(text)
    if m:
        a, b = ("GOOD" in m.group(1)), ("GOOD" in m.group(2))
        return "Let me think.\nVerdict: " + ("A" if a and not b else "B" if b and not a else "tie")
    m = _ONE.search(text)
    assert m, f"unexpected judge prompt: {text[:200]}"
    r = m.group(1)
    return json.dumps(
        {
            "likert": 6 if "GOOD" in r else 2,
            "fails_instruction": "GOOD" not in r,
            "toxic": False,
            "off_topic": False,
            "hallucination": "FAKE" in r,
            "inappropriate_for_customer_assistant": False,
        }
    )


def handler(fn):
    return lambda req: fn(req.text)


@pytest.fixture
def server():
    with OpenAIStub(handler(keyword_judge)) as s:
        yield s


def make_judge(server, **kw):
    cfg = JudgeConfig(base_url=server.base_url, model="stub-judge", api_key_env="INSTRUCTRL_TEST_KEY", **kw)
    return LLMJudge.from_config(cfg, Rubric(toxicity="lexicon"))


@pytest.mark.parametrize(
    "text,verdict",
    [
        ("Verdict: A", "A"),
        ("verdict: b", "B"),
        ("**Verdict:** tie", "tie"),
        ("Verdict: Response B", "B"),
        ("A is shorter. Verdict: A\n...on reflection, Verdict: B", "B"),
        ("B", "B"),
        (" tie. ", "tie"),
        ("I cannot decide.", None),
        ("", None),
        ("Verdict: neither", None),
    ],
)
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


def test_combine_orders_cancels_position_bias():
    # x shown first then second: a verdict counts only when both orders agree
    assert combine_orders("A", "B") == "win"
    assert combine_orders("B", "A") == "loss"
    assert combine_orders("A", "A") == "tie"  # always the first position: bias, not preference
    assert combine_orders("B", "B") == "tie"
    assert combine_orders("tie", "B") == "tie" and combine_orders(None, "B") == "tie"


def test_parse_pointwise():
    assert parse_pointwise('{"likert": 5, "toxic": false, "junk": 1}') == {"likert": 5, "toxic": False}
    assert parse_pointwise('Sure! ```json\n{"likert": 9.4}\n```') == {"likert": 7}
    assert parse_pointwise("Likert: 3 because it is vague") == {"likert": 3}
    assert parse_pointwise("no idea") is None and parse_pointwise('{"likert": true}') is None


def test_compare_asks_both_orders(server):
    judge = make_judge(server)
    p = Prompt(prompt="Say something nice.")
    assert judge.compare(p, "a GOOD answer", "a poor answer") == "win"
    assert judge.compare(p, "a poor answer", "a GOOD answer") == "loss"
    assert judge.compare(p, "a GOOD answer", "another GOOD answer") == "tie"
    assert judge.requests == 6 and len(server.requests) == 6
    shown = {_PAIR.search(r["messages"][-1]["content"]).groups() for r in server.requests[:2]}  # sent concurrently
    assert shown == {("a GOOD answer", "a poor answer"), ("a poor answer", "a GOOD answer")}
    first = server.requests[0]["messages"][-1]["content"]
    body = server.requests[0]
    assert body["model"] == "stub-judge" and body["temperature"] == 0.0 and body["messages"][0]["role"] == "system"
    assert PAIRWISE_TEMPLATE.split("\n")[0] in first


def test_position_biased_judge_gives_ties():
    with OpenAIStub(handler(lambda text: "Verdict: A" if _PAIR.search(text) else '{"likert": 4}')) as s:
        judge = make_judge(s)
        p = Prompt(prompt="Pick one.")
        assert judge.compare(p, "x GOOD", "y") == "tie"
        r = judge.rank(p, ["one", "two GOOD", "three"])
        assert r.ranks == [1, 1, 1] and r.likert == [4, 4, 4]


def test_rank_by_copeland_with_likert_and_flags(server):
    judge = make_judge(server)
    p = Prompt(
        prompt="Write a greeting for a shop.",
        id="g1",
        user_id="u1",
        category="generation",
        constraints=[{"kind": "max_words", "value": 6}],
    )
    responses = [
        "Welcome, GOOD to see you!",
        "Hello there.",
        "Hi, GOOD day and thanks for visiting our little shop",
        "GOOD",
    ]
    r = judge.rank(p, responses, finish_reasons=["stop", "stop", "length", "stop"])
    # the GOOD ones win against "Hello there." and tie each other: Copeland 2.0, 2.0, 0.0, 2.0 (no pair of GOOD
    # responses is decided), so the three tie at rank 1
    assert r.ranks == [1, 2, 1, 1] and r.labeler_id == "llm:stub-judge" and r.id == "g1"
    assert r.likert == [6, 2, 6, 6]
    assert all(set(f) == set(FLAGS) for f in r.flags)
    assert r.flags[2]["truncated"] and r.flags[2]["violates_constraint"]  # mechanical flags: from the rubric
    assert r.flags[1]["fails_instruction"] and not r.flags[0]["fails_instruction"]  # semantic flags: the judge's
    assert judge.requests == 4 * 3 + 4  # C(4,2) pairs in both orders + one pointwise call per response
    assert judge.unparsed == 0


def test_judge_and_demonstrate(server):
    judge = make_judge(server)
    p = Prompt(prompt="Tell me about Mars.")
    j = judge.judge(p, "Mars is red. GOOD FAKE")
    assert j.likert == 6 and j.flags["hallucination"] and j.quality == pytest.approx(5 / 6)
    d = judge.demonstrate(p, ["meh", "Mars is the fourth planet. GOOD", "nope"])
    assert d.response == "Mars is the fourth planet. GOOD" and d.meta["from"] == "best_of_n"
    ref = Prompt(prompt="2+2?", reference="4")
    before = judge.requests
    assert judge.demonstrate(ref, ["5"]).response == "4" and judge.requests == before  # no request needed
    assert judge.demonstrate(p, ["meh"], min_quality=0.5) is None


def test_unparseable_answers_count_as_ties():
    with OpenAIStub(handler(lambda text: "I would rather not say.")) as s:
        judge = make_judge(s, likert=False)
        assert judge.compare("Which?", "a", "b") == "tie" and judge.unparsed == 2


def test_api_key_comes_from_the_named_variable(monkeypatch):
    with OpenAIStub(handler(keyword_judge), api_key="sekrit") as s:
        monkeypatch.delenv("INSTRUCTRL_TEST_KEY", raising=False)
        with pytest.raises(OpenAIError, match="401"):
            make_judge(s).compare("Hi?", "GOOD", "bad")
        monkeypatch.setenv("INSTRUCTRL_TEST_KEY", "sekrit")
        assert make_judge(s).compare("Hi?", "GOOD", "bad") == "win"


def test_judge_config_validation():
    with pytest.raises(ValueError, match="base_url must start with http"):
        JudgeConfig(base_url="localhost:8000")
