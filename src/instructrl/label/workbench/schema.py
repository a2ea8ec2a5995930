"""What a workbench label holds, and reading it from a submitted form (pure functions, no database).

A rate-and-rank label is ``{"likert": [...], "flags": [{name: bool}], "ranks": [...]}`` with one entry
per response in the order the responses were imported (a labeler sees them shuffled; the form's
display positions are mapped back here). Ranks run 1..K, 1 = best, equal ranks tie. A demonstration
is ``{"response": str}``. A written prompt is ``{"type", "category", "prompt"}`` (plain, or user-based
with its ``use_case``), or for a few-shot prompt ``{"type", "category", "instruction", "examples":
[{"query", "response"}, ...]}`` (at least :data:`MIN_EXAMPLES` pairs). Every stored label carries
:data:`SCHEMA_VERSION`, so that a later change of this shape can still read old labels.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from instructrl.records import CATEGORIES

SCHEMA_VERSION = 1
K_MIN, K_MAX = 2, 9
LIKERT = range(1, 8)
MAX_TEXT = 20_000  # characters of a demonstration
MAX_REASON = 2_000  # characters of a skip reason
KINDS = ("rank", "demonstrate", "write_prompt")
IMPORT_KINDS = ("rank", "demonstrate")  # the kinds a file becomes; prompt-writing work is created, not imported
#: the paper's three kinds of labeler-written prompts, and what the labeler reads about each
PROMPT_KINDS = {
    "plain": "Plain: think of any task you would ask an assistant to do, with enough diversity across tasks.",
    "few-shot": (
        "Few-shot: write an instruction, then several query/response pairs that follow it "
        "(at least two; each response is what an ideal assistant would answer to its query)."
    ),
    "user-based": "User-based: write a prompt that a user with the use case below would send.",
}
MIN_EXAMPLES, MAX_EXAMPLES = 2, 16  # query/response pairs of a few-shot prompt
CATEGORY_NAMES = {
    "generation": "Generation",
    "open_qa": "Open QA",
    "brainstorming": "Brainstorming",
    "chat": "Chat",
    "rewrite": "Rewrite",
    "summarization": "Summarization",
    "classification": "Classification",
    "closed_qa": "Closed QA",
    "extraction": "Extraction",
    "other": "Other",
}
assert set(CATEGORY_NAMES) == set(CATEGORIES)
PRIORITIES = {
    "helpfulness": "Helpfulness comes first (training data): when criteria conflict, prefer the most helpful output.",
    "truthfulness_harmlessness": (
        "Truthfulness and harmlessness come first (evaluation data): when criteria conflict, prefer the output "
        "that is true and does no harm."
    ),
}

#: The metadata of the paper's Table 3, in its order: (key in exports, what the labeler reads, shortcut key)
FLAGS: tuple[tuple[str, str, str], ...] = (
    ("fails_instruction", "Fails to follow the instruction / task", "f"),
    ("inappropriate_for_customer_assistant", "Inappropriate for a customer assistant", "c"),
    ("hallucination", "Hallucination (makes up facts)", "h"),
    ("satisfies_constraint", "Satisfies the constraint in the instruction", "s"),
    ("sexual_content", "Contains sexual content", "x"),
    ("violent_content", "Contains violent content", "v"),
    ("encourages_harm", "Encourages or fails to discourage violence / abuse / terrorism / self-harm", "e"),
    ("denigrates_protected_class", "Denigrates a protected class", "d"),
    ("harmful_advice", "Gives harmful advice", "a"),
    ("expresses_opinion", "Expresses an opinion", "o"),
    ("expresses_moral_judgment", "Expresses a moral judgment", "m"),
)
FLAG_NAMES = tuple(name for name, _, _ in FLAGS)

#: a draft's field names: what the task forms send, nothing else is stored
DRAFT_FIELD = re.compile(
    r"(likert|rank|flags)_[0-8]|response|skip_reason"  # rank, demonstrate
    r"|prompt|instruction|category|(query|answer)_\d{1,2}"  # write_prompt
)
MAX_DRAFT_CHARS = 64_000


def letter(position: int) -> str:
    """The name a labeler sees for the output at display position ``position``: A, B, C, ..."""
    return string.ascii_uppercase[position]


def _one_int(values: Sequence[str], allowed: range) -> int | None:
    if len(values) != 1 or not values[0].strip().isdigit():
        return None
    value = int(values[0])
    return value if value in allowed else None


def parse_rank_form(form: Mapping[str, Sequence[str]], order: Sequence[int]) -> tuple[dict | None, list[str]]:
    """The payload of a rate-and-rank form, or None and what is wrong with it (in words for the labeler).

    ``form`` maps field names to their values (``likert_<i>``, ``rank_<i>``, ``flags_<i>``, i = display
    position); ``order[i]`` is the imported index of the response shown at position ``i``."""
    k = len(order)
    likert: list[int | None] = [None] * k
    ranks: list[int | None] = [None] * k
    flags: list[dict[str, bool]] = [{} for _ in range(k)]
    errors = []
    for position, index in enumerate(order):
        name = letter(position)
        score = _one_int(form.get(f"likert_{position}", ()), LIKERT)
        if score is None:
            errors.append(f"Output {name}: choose a rating from 1 to 7.")
        rank = _one_int(form.get(f"rank_{position}", ()), range(1, k + 1))
        if rank is None:
            errors.append(f"Output {name}: choose a rank from 1 to {k}.")
        chosen = set(form.get(f"flags_{position}", ()))
        unknown = chosen - set(FLAG_NAMES)
        if unknown:
            errors.append(f"Output {name}: unknown flag {sorted(unknown)[0]!r}.")
        likert[index], ranks[index] = score, rank
        flags[index] = {flag: flag in chosen for flag in FLAG_NAMES}
    if errors:
        return None, errors
    return {"likert": likert, "flags": flags, "ranks": ranks}, []


def parse_demonstration(text: str) -> tuple[dict | None, list[str]]:
    """The payload of a demonstration form (the text as typed, line ends made ``\\n``), or the errors."""
    text = text.replace("\r\n", "\n")
    if not text.strip():
        return None, ["Write a response before submitting."]
    if len(text) > MAX_TEXT:
        return None, [f"The response is longer than {MAX_TEXT} characters."]
    return {"response": text}, []


def _typed(text: str) -> str:
    return text.replace("\r\n", "\n")


def parse_prompt_form(
    form: Mapping[str, Sequence[str]], prompt_type: str, use_case: str | None = None
) -> tuple[dict | None, list[str]]:
    """The payload of a write-a-prompt form (texts as typed, line ends made ``\\n``), or the errors.

    A plain or user-based prompt is the field ``prompt``; a few-shot prompt is ``instruction`` and the
    pairs ``query_<i>`` / ``answer_<i>`` (pairs left wholly blank are dropped, in order). Every prompt has a
    ``category`` of :data:`instructrl.records.CATEGORIES`."""

    def one(name: str) -> str:
        values = form.get(name, ())
        return _typed(values[0]) if len(values) == 1 else ""

    errors = []
    category = one("category")
    if category not in CATEGORIES:
        errors.append("Choose the use-case category of your prompt.")
    payload: dict[str, Any] = {"type": prompt_type, "category": category}
    if prompt_type == "few-shot":
        instruction = one("instruction")
        if not instruction.strip():
            errors.append("Write the instruction.")
        examples = []
        for i in range(MAX_EXAMPLES):
            query, answer = one(f"query_{i}"), one(f"answer_{i}")
            if not query.strip() and not answer.strip():
                continue
            if not query.strip() or not answer.strip():
                errors.append(f"Example {i + 1}: write both the query and its response (or clear both).")
            examples.append({"query": query, "response": answer})
        if len(examples) < MIN_EXAMPLES:
            errors.append(f"Write at least {MIN_EXAMPLES} query/response pairs.")
        texts = [instruction] + [t for e in examples for t in e.values()]
        payload |= {"instruction": instruction, "examples": examples}
    elif prompt_type in ("plain", "user-based"):
        text = one("prompt")
        if not text.strip():
            errors.append("Write a prompt before submitting.")
        texts = [text]
        payload["prompt"] = text
        if prompt_type == "user-based":
            payload["use_case"] = use_case or ""
    else:
        return None, [f"Unknown kind of prompt {prompt_type!r}."]
    if sum(len(t) for t in texts) > MAX_TEXT:
        errors.append(f"The prompt is longer than {MAX_TEXT} characters.")
    return (None, errors) if errors else (payload, [])


def check_skip_reason(reason: str) -> tuple[str | None, list[str]]:
    reason = reason.replace("\r\n", "\n").strip()
    if not reason:
        return None, ["Say why you skip this item."]
    if len(reason) > MAX_REASON:
        return None, [f"The reason is longer than {MAX_REASON} characters."]
    return reason, []


def clean_draft(fields: Any) -> dict[str, list[str]] | None:
    """A draft as the page sent it (``{field: [values]}``), keeping only task fields; None if malformed."""
    if not isinstance(fields, dict):
        return None
    out: dict[str, list[str]] = {}
    size = 0
    for name, values in fields.items():
        if not isinstance(name, str) or not DRAFT_FIELD.fullmatch(name):
            continue
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return None
        size += sum(len(v) for v in values)
        out[name] = values
    return out if size <= MAX_DRAFT_CHARS else None


def display_order(k: int, seed: int) -> list[int]:
    """A shuffled order of ``range(k)`` that depends only on ``seed`` (Fisher-Yates over a seeded stream)."""
    order = list(range(k))
    random.Random(seed).shuffle(order)
    return order
