"""Screening applicants as InstructGPT screened its labelers (pure functions: no database, no web).

The paper's four criteria (Appendix B.1), each a part of a screening test:

1. **Sensitive-speech flagging**: the applicant marks each (prompt, response) as sensitive or not; the
   score is the share of items where they agree with the researchers' flag.
2. **Ranking**: the applicant ranks a prompt's responses; the score is their pairwise agreement with
   the researchers' ranking, scored as on the agreement dashboard (every pair of responses: same order
   1, opposite 0, a tie against an order 1/2), pooled over the ranking items.
3. **Sensitive demonstrations**: the applicant writes a response to each sensitive prompt; a reviewer
   scores each from 1 to 7; the score is the mean.
4. **Self-declared topics**: the topics and groups the applicant says they are comfortable judging.

The report compares the first three with soft cut-offs, by default the paper's: about 75% agreement on
flags and on rankings, and 6 of 7 on demonstrations. They are soft: the report says who meets them,
and an admin decides.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from instructrl.label.panel import pair_verdicts
from instructrl.label.workbench.agreement import compare
from instructrl.label.workbench.schema import K_MAX, K_MIN, LIKERT, MAX_TEXT
from instructrl.records import RecordError, iter_json_lines, require_records

KINDS = ("flag", "rank", "demonstrate")
FLAG_CUTOFF = 0.75
RANK_CUTOFF = 0.75
DEMO_CUTOFF = 6.0
MAX_TOPIC = 100  # characters of one self-declared topic
DEFAULT_TOPICS = (
    "Politics and elections",
    "Religion",
    "Race and ethnicity",
    "Gender and sexuality",
    "Disability and health conditions",
    "Violence and self-harm",
    "Sexual content",
    "Drugs and alcohol",
    "Medical advice",
    "Legal and financial advice",
    "Immigration and nationality",
    "Crime and extremism",
)
_FIELDS = {
    "flag": ({"kind", "prompt", "response", "sensitive"}, {"id"}),
    "rank": ({"kind", "prompt", "responses", "ranks"}, {"id"}),
    "demonstrate": ({"kind", "prompt"}, {"id"}),
}


@dataclass
class ScreeningItemSpec:
    """One item of a screening test as imported: ``reference`` is the researchers' answer."""

    kind: str
    prompt: Any
    responses: list[str] | None
    reference: dict | None


def _prompt(value: Any, where: str) -> Any:
    if isinstance(value, str) and value.strip():
        return value
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
    ):
        return value
    raise RecordError(where, "prompt", "must be a non-empty string or a list of {role, content} messages")


def parse_item(obj: Any, where: str) -> ScreeningItemSpec:
    """One line of a screening-test JSONL (``where`` is its file:line, for the message)."""
    if not isinstance(obj, dict):
        raise RecordError(where, None, "expected a JSON object")
    kind = obj.get("kind")
    if kind not in KINDS:
        raise RecordError(where, "kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    required, optional = _FIELDS[kind]
    missing = sorted(required - set(obj))
    if missing:
        raise RecordError(where, missing[0], f"is required for a {kind} item")
    unknown = sorted(set(obj) - required - optional)
    if unknown:
        raise RecordError(where, unknown[0], f"is not a field of a {kind} item ({', '.join(sorted(required))})")
    prompt = _prompt(obj["prompt"], where)
    if kind == "flag":
        if not isinstance(obj["response"], str) or not obj["response"].strip():
            raise RecordError(where, "response", "must be a non-empty string")
        if not isinstance(obj["sensitive"], bool):
            raise RecordError(where, "sensitive", "must be true or false (the researchers' flag)")
        return ScreeningItemSpec(kind, prompt, [obj["response"]], {"sensitive": obj["sensitive"]})
    if kind == "rank":
        responses, ranks = obj["responses"], obj["ranks"]
        if not isinstance(responses, list) or not all(isinstance(r, str) and r.strip() for r in responses):
            raise RecordError(where, "responses", "must be a list of non-empty strings")
        if not K_MIN <= len(responses) <= K_MAX:
            raise RecordError(where, "responses", f"has {len(responses)}; a ranking shows {K_MIN} to {K_MAX}")
        k = len(responses)
        if (
            not isinstance(ranks, list)
            or len(ranks) != k
            or not all(isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= k for r in ranks)
        ):
            raise RecordError(where, "ranks", f"must give each of the {k} responses a rank from 1 to {k}")
        return ScreeningItemSpec(kind, prompt, list(responses), {"ranks": list(ranks)})
    return ScreeningItemSpec(kind, prompt, None, None)


def read_items(path: str | os.PathLike, name: str | None = None) -> list[ScreeningItemSpec]:
    """Every item of a screening-test JSONL, checked before anything is stored; errors name ``name``
    (default: the path) and the line."""
    shown = name or str(path)
    items = []
    try:
        for lineno, obj in iter_json_lines(path):
            items.append(parse_item(obj, f"{shown}:{lineno}"))
    except RecordError as e:
        raise RecordError(e.where.replace(str(path), shown, 1), e.field, e.reason) from None
    return require_records(items, shown, "screening items")


def parse_topics(raw: str) -> list[str]:
    """Topics typed one per line (or comma-separated), stripped, without repeats, in order."""
    out: list[str] = []
    for part in raw.replace(",", "\n").splitlines():
        topic = part.strip()[:MAX_TOPIC]
        if topic and topic not in out:
            out.append(topic)
    return out


# ------------------------------------------------------------------------------------ answers


@dataclass(frozen=True)
class ItemView:
    """What :func:`parse_answers` needs of an item: its id, kind and number of responses."""

    id: int
    kind: str
    k: int = 0


def _one(form: Mapping[str, Sequence[str]], name: str) -> str:
    values = form.get(name, ())
    return values[0] if len(values) == 1 else ""


def parse_answers(
    form: Mapping[str, Sequence[str]], items: Sequence[ItemView], topics: Sequence[str]
) -> tuple[dict[int, dict], list[str], list[str]]:
    """The applicant's answers (item id -> answer), the topics they declared, and what is wrong with the form.

    Fields: ``flag_<id>`` = ``yes``/``no``; ``rank_<id>_<i>`` = 1..K; ``demo_<id>`` = text; ``topics`` = the
    checked topics of the test; ``topics_other`` = more, one per line."""
    answers: dict[int, dict] = {}
    errors = []
    for number, item in enumerate(items, start=1):
        if item.kind == "flag":
            value = _one(form, f"flag_{item.id}")
            if value not in ("yes", "no"):
                errors.append(f"Item {number}: say whether the response is sensitive.")
                continue
            answers[item.id] = {"sensitive": value == "yes"}
        elif item.kind == "rank":
            ranks = []
            for i in range(item.k):
                value = _one(form, f"rank_{item.id}_{i}").strip()
                ranks.append(int(value) if value.isdigit() and 1 <= int(value) <= item.k else None)
            if None in ranks:
                errors.append(f"Item {number}: give every response a rank from 1 to {item.k}.")
                continue
            answers[item.id] = {"ranks": ranks}
        else:
            text = _one(form, f"demo_{item.id}").replace("\r\n", "\n")
            if not text.strip():
                errors.append(f"Item {number}: write a response.")
            elif len(text) > MAX_TEXT:
                errors.append(f"Item {number}: the response is longer than {MAX_TEXT} characters.")
            else:
                answers[item.id] = {"response": text}
    chosen = [t for t in form.get("topics", ()) if t in topics]
    declared = chosen + [t for t in parse_topics(_one(form, "topics_other")) if t not in chosen]
    return answers, declared, errors


def check_score(raw: str) -> int | None:
    """A reviewer's 1-7 score of a demonstration, or None if ``raw`` is not one."""
    raw = raw.strip()
    return int(raw) if raw.isdigit() and int(raw) in LIKERT else None


# ------------------------------------------------------------------------------------ the report


@dataclass
class Cutoffs:
    flag: float = FLAG_CUTOFF
    rank: float = RANK_CUTOFF
    demo: float = DEMO_CUTOFF


@dataclass
class Graded:
    """One item with the applicant's answer: ``kind``, the researchers' ``reference``, the ``answer`` (None if
    not answered) and, for a demonstration, the reviewer's ``score`` (None until reviewed)."""

    kind: str
    reference: dict | None
    answer: dict | None
    score: int | None = None


@dataclass
class ScreeningReport:
    flag_agreement: float | None  # share of flag items agreeing with the researchers
    flag_items: int
    rank_agreement: float | None  # pairwise agreement with the researchers' rankings (ties half)
    rank_comparisons: int
    demo_score: float | None  # mean reviewer score of the demonstrations reviewed so far
    demos_reviewed: int
    demos: int
    topics: list[str]
    cutoffs: Cutoffs = field(default_factory=Cutoffs)
    meets: dict[str, bool | None] = field(default_factory=dict)  # per criterion; None: not measurable yet
    meets_all: bool | None = None  # None while something is not measurable (e.g. demonstrations unreviewed)

    def to_dict(self) -> dict:
        return asdict(self)


def grade(graded: Sequence[Graded], topics: Sequence[str], cutoffs: Cutoffs | None = None) -> ScreeningReport:
    """The screening report of one applicant's answers."""
    cutoffs = cutoffs or Cutoffs()
    flags = [g for g in graded if g.kind == "flag"]
    flag_hits = sum(1 for g in flags if g.answer is not None and g.answer["sensitive"] == g.reference["sensitive"])
    points, comparisons = 0.0, 0
    for g in graded:
        if g.kind != "rank":
            continue
        reference = pair_verdicts(g.reference["ranks"])
        if g.answer is None:  # an unanswered ranking agrees on nothing
            comparisons += reference.size
            continue
        p, n, _, _ = compare(pair_verdicts(g.answer["ranks"]), reference)
        points, comparisons = points + p, comparisons + n
    demos = [g for g in graded if g.kind == "demonstrate"]
    scores = [g.score for g in demos if g.score is not None]
    flag_rate = flag_hits / len(flags) if flags else None
    rank_rate = points / comparisons if comparisons else None
    demo_mean = sum(scores) / len(scores) if scores and len(scores) == len(demos) else None
    meets = {
        "flag": None if flag_rate is None else flag_rate >= cutoffs.flag,
        "rank": None if rank_rate is None else rank_rate >= cutoffs.rank,
        "demo": None if demo_mean is None else demo_mean >= cutoffs.demo,
    }
    # one criterion missed settles it; otherwise it waits for unreviewed demonstrations
    if any(v is False for v in meets.values()):
        meets_all: bool | None = False
    elif (demos and demo_mean is None) or all(v is None for v in meets.values()):
        meets_all = None
    else:
        meets_all = True
    return ScreeningReport(
        flag_agreement=flag_rate,
        flag_items=len(flags),
        rank_agreement=rank_rate,
        rank_comparisons=comparisons,
        demo_score=sum(scores) / len(scores) if scores else None,
        demos_reviewed=len(scores),
        demos=len(demos),
        topics=list(topics),
        cutoffs=cutoffs,
        meets=meets,
        meets_all=meets_all,
    )
