"""How a generated text goes wrong in form: repeated n-grams, repeated lines, runs of one
character, and text cut off mid-sentence."""

from __future__ import annotations

import re
from collections import Counter


def repetition(text: str, n: int = 3) -> float:
    """``1 - distinct/total`` word n-grams (lower-cased); 0 for texts of fewer than n + 5 words."""
    toks = text.lower().split()
    if len(toks) < n + 5:
        return 0.0
    grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def repeated_lines(text: str) -> int:
    """How often the most frequent non-empty line (stripped) occurs."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return max(Counter(lines).values()) if lines else 0


_CHAR_RUN = re.compile(r"(.)\1{19,}", re.DOTALL)


def has_char_run(text: str) -> bool:
    """One character 20 or more times in a row ("!!!!...", "aaaa...")."""
    return bool(_CHAR_RUN.search(text))


_CLOSING = set(".!?\"'\u201d\u2019)]}>*`\u2026\u3002\uff01\uff1f")
_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)]|#+)\s")


def looks_truncated(text: str) -> bool:
    """Whether text whose sampler did not say why it stopped looks cut off: an unclosed ``` fence,
    a last character of ``,`` ``;`` ``:`` ``-`` ``(``, or a last line of 8+ words ending in a letter
    or digit (a short last line, a list item or a heading may end bare)."""
    s = text.rstrip()
    if not s:
        return False
    if s.count("```") % 2 == 1:
        return True
    last = s[-1]
    if last in ",;:-(":
        return True
    if last in _CLOSING or not last.isalnum():
        return False
    last_line = s.splitlines()[-1]
    if _LIST_LINE.match(last_line):
        return False
    return len(last_line.split()) >= 8
