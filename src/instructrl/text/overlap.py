"""Lexical overlap between two texts: content words, stems, F1, copied n-grams, numbers.

Best-effort measures of whether a response speaks of its prompt's topic, matches a reference, or
copies its prompt; no model, only words.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

_STOP = set(
    """
a about above after again against all also am an and any are aren as at be because been before being below
between both but by can cannot could couldn did didn do does doesn doing don down during each else even ever
every few for from further get gets got had hadn has hasn have haven having he her here hers herself him himself
his how however i if in into is isn it its itself just let like made make many may me might more most much must
my myself need no nor not now of off often on once one only or other our ours ourselves out over own per please
quite rather really said same say says see seem shall she should shouldn since so some such than that the their
theirs them themselves then there these they thing things this those though through thus to too under until up
upon us use used using very via was wasn way we well were weren what when where whether which while who whom
whose why will with within without won would wouldn yes yet you your yours yourself yourselves
""".split()
)
# words of instructions rather than of topics
_INSTRUCTION = set(
    """
write writing written explain describe list give tell provide answer respond response reply question questions
word words sentence sentences paragraph paragraphs bullet bullets point points item items numbered number format
following below above text short brief briefly long detail detailed include including includes keyword keywords
language english french spanish german italian portuguese dutch lowercase uppercase letters letter capital
comma commas json key keys quote quotes quotation wrap wrapped start starts end ends begin begins exactly least
most maximum minimum only make create generate compose draft summarize summary rewrite rephrase translate
classify extract output return show help want know simple simply example examples assistant user human
two three four five six seven eight nine ten twelve twenty hundred first second third fourth fifth
""".split()
)


def stem(w: str) -> str:
    """Crude suffix stripping that maps "serve", "served", "serves", "serving" to one stem."""
    for suf, n in (("ies", 3), ("ing", 3), ("ers", 3), ("ed", 2), ("es", 2), ("ly", 2), ("er", 2), ("s", 1)):
        if w.endswith(suf) and len(w) - n >= 3:
            w = w[:-n] + ("y" if suf == "ies" else "")
            break
    return w[:-1] if w.endswith("e") and len(w) > 3 else w


_LETTERS = re.compile(r"[^\W\d_]+")


def letter_words(text: str) -> int:
    """How many runs of two or more letters ``text`` holds (digits and punctuation split them)."""
    return sum(len(w) >= 2 for w in _LETTERS.findall(text))


def content_words(text: str) -> list[str]:
    """Lower-cased, stemmed letter runs of 3+ characters that are neither stop words nor
    instruction vocabulary."""
    out = []
    for w in _LETTERS.findall(text.lower()):
        if len(w) >= 3 and w not in _STOP and w not in _INSTRUCTION:
            out.append(stem(w))
    return out


def shared_stems(a: set[str], b: set[str]) -> int:
    """How many stems of ``a`` occur in ``b``, where stems of 5+ characters also match on their
    first 5 ("bacterium" and "bacteria")."""
    prefixes = {w[:5] for w in b if len(w) >= 5}
    return sum(w in b or (len(w) >= 5 and w[:5] in prefixes) for w in a)


def f1_overlap(a: Iterable[str], b: Iterable[str]) -> float:
    """Bag-of-words F1 between two token lists (0 when either is empty)."""
    ca, cb = Counter(a), Counter(b)
    common = sum((ca & cb).values())
    if not common:
        return 0.0
    p, r = common / sum(ca.values()), common / sum(cb.values())
    return 2 * p * r / (p + r)


def echo_fraction(prompt: str, response: str, n: int = 3) -> float:
    """Share of the response's word n-grams that occur in the prompt (0 for short responses)."""
    r = response.lower().split()
    if len(r) < n + 2:
        return 0.0
    p = prompt.lower().split()
    pg = {tuple(p[i : i + n]) for i in range(len(p) - n + 1)}
    rg = [tuple(r[i : i + n]) for i in range(len(r) - n + 1)]
    return sum(g in pg for g in rg) / len(rg)


_NUMBER = re.compile(r"(?<![\d.,])\d+(?:[.,]\d+)*")
_LIST_MARKER = re.compile(r"^\s*\d+[.)]\s", re.MULTILINE)


def numbers(text: str) -> set[str]:
    """Numbers of two or more significant digits (years, amounts, counts), thousands separators
    and leading zeros dropped, list markers ("1. ", "2) ") left out."""
    text = _LIST_MARKER.sub(" ", text)
    out = set()
    for n in _NUMBER.findall(text):
        n = n.replace(",", "").lstrip("0")
        if sum(ch.isdigit() for ch in n) >= 2:
            out.add(n)
    return out
