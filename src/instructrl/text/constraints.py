"""Verifiable constraints: instructions whose compliance a program can decide exactly.

A prompt's ``constraints`` field lists ``{"kind", "value"}`` objects (:data:`CONSTRAINT_KINDS`).
:func:`validate_constraint` checks one against the schema; :func:`check_constraint` decides it on a
response: word, sentence, bullet, numbered-item and paragraph counts; required and forbidden words
as whole words ignoring case; the language by ``langid``; a JSON object with given keys (the whole
text or its first ``` fence); a given start or end; letter case; no commas; wrapped in double quotes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from instructrl.text.language import detect_languages

CONSTRAINT_KINDS = (
    "max_words",
    "min_words",
    "max_sentences",
    "exact_bullets",
    "numbered_items",
    "include_keywords",
    "forbidden_words",
    "language",
    "json_keys",
    "ends_with",
    "starts_with",
    "all_lowercase",
    "all_uppercase",
    "no_commas",
    "num_paragraphs",
    "quote_wrapped",
)

# the value each kind takes: a non-negative integer, a non-empty list of words, a non-empty string, true
INT_KINDS = {"max_words", "min_words", "max_sentences", "exact_bullets", "numbered_items", "num_paragraphs"}
LIST_KINDS = {"include_keywords", "forbidden_words", "json_keys"}
STR_KINDS = {"language", "ends_with", "starts_with"}
TRUE_KINDS = {"all_lowercase", "all_uppercase", "no_commas", "quote_wrapped"}


def words(text: str) -> list[str]:
    """Whitespace-separated tokens."""
    return text.split()


_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def sentences(text: str) -> list[str]:
    """Sentences: split on runs of ``.``, ``!``, ``?`` followed by whitespace or the end."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


_BULLET = re.compile(r"^\s*[-*•] ", re.MULTILINE)
_NUMBERED = re.compile(r"^\s*(\d+)\.", re.MULTILINE)


def bullet_lines(text: str) -> int:
    """Lines starting with ``- ``, ``* `` or ``• `` after optional spaces."""
    return len(_BULLET.findall(text))


def numbered_items(text: str) -> list[int]:
    """The numbers of the lines that start with ``<digits>.`` after optional spaces."""
    return [int(n) for n in _NUMBERED.findall(text)]


def paragraphs(text: str) -> list[str]:
    """Blocks separated by blank lines (lines holding only whitespace count as blank)."""
    return [p for p in re.split(r"\n[ \t]*\n", text.strip()) if p.strip()]


def word_pattern(word: str) -> re.Pattern:
    """A pattern matching ``word`` (or a phrase) as a whole word, ignoring case."""
    return re.compile(r"(?<!\w)" + re.escape(word.strip()) + r"(?!\w)", re.IGNORECASE)


def has_word(text: str, word: str) -> bool:
    """``word`` (or phrase) occurs in ``text`` as a whole word, ignoring case."""
    return bool(word_pattern(word).search(text))


_FENCE = re.compile(r"```[a-zA-Z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)


def parse_json_object(text: str) -> dict | None:
    """The JSON object ``text`` holds (the whole text, or the first ``` fenced block), else None."""
    candidates = [text.strip()]
    m = _FENCE.search(text)
    if m:
        candidates.insert(0, m.group(1).strip())
    for c in candidates:
        try:
            obj = json.loads(c)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict):
            return obj
    return None


_QUOTES = (('"', '"'), ("\u201c", "\u201d"))


def validate_constraint(c: Any, where: str = "constraints") -> tuple[str, Any]:
    """Check one ``{"kind", "value"}`` object against the schema; returns ``(kind, value)``.

    Raises ``ValueError`` naming ``where`` and what is wrong."""
    if not isinstance(c, dict) or "kind" not in c or "value" not in c or set(c) - {"kind", "value"}:
        raise ValueError(f"{where}: a constraint is an object with exactly 'kind' and 'value', got {c!r:.80}")
    kind, value = c["kind"], c["value"]
    if kind not in CONSTRAINT_KINDS:
        raise ValueError(f"{where}: unknown constraint kind {kind!r}; valid kinds: {', '.join(CONSTRAINT_KINDS)}")
    if kind in INT_KINDS:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{where}: {kind} takes a non-negative integer, got {value!r}")
    elif kind in LIST_KINDS:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError(f"{where}: {kind} takes a non-empty list of non-empty strings, got {value!r}")
    elif kind in STR_KINDS:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: {kind} takes a non-empty string, got {value!r}")
    elif value is not True:
        raise ValueError(f"{where}: {kind} takes the value true, got {value!r}")
    return kind, value


def check_constraint(kind: str, value: Any, response: str, *, language: str | None = None) -> bool:
    """Whether ``response`` satisfies one constraint (see the module doc and /README).

    ``language`` is the response's language as ``langid`` sees it; needed only for ``language``
    (computed here when not given)."""
    if kind == "max_words":
        return len(words(response)) <= value
    if kind == "min_words":
        return len(words(response)) >= value
    if kind == "max_sentences":
        return len(sentences(response)) <= value
    if kind == "exact_bullets":
        return bullet_lines(response) == value
    if kind == "numbered_items":
        return numbered_items(response) == list(range(1, value + 1))
    if kind == "include_keywords":
        return all(has_word(response, k) for k in value)
    if kind == "forbidden_words":
        return not any(has_word(response, k) for k in value)
    if kind == "language":
        if language is None:
            language = detect_languages([response])[0]
        if language is None:  # langid is not installed: the constraint cannot be checked
            return True
        return language == value.strip().lower()
    if kind == "json_keys":
        obj = parse_json_object(response)
        return obj is not None and all(k in obj for k in value)
    if kind == "ends_with":
        return response.rstrip().endswith(value.rstrip())
    if kind == "starts_with":
        return response.lstrip().startswith(value.lstrip())
    if kind == "all_lowercase":
        return not any(ch.isupper() for ch in response)
    if kind == "all_uppercase":
        return not any(ch.islower() for ch in response)
    if kind == "no_commas":
        return "," not in response
    if kind == "num_paragraphs":
        return len(paragraphs(response)) == value
    if kind == "quote_wrapped":
        s = response.strip()
        return len(s) >= 2 and any(s.startswith(a) and s.endswith(b) for a, b in _QUOTES)
    raise ValueError(f"unknown constraint kind {kind!r}; valid kinds: {', '.join(CONSTRAINT_KINDS)}")
