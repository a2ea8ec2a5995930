"""The novelty filter: is a new instruction's ROUGE-L F1 with every pool instruction below a threshold?

Decisions are exactly those of ``rouge_score.rouge_scorer.RougeScorer(['rougeL'])`` with its
default tokenizer (no stemmer): the same tokens (:func:`rouge_tokens`), the same LCS length, and
the F1 computed with the same floating-point expression, so even a score that lands exactly on the
threshold is decided the same way. An instruction is novel when every score is ``< threshold``.

It is fast because almost no pair is scored:

* Tokens become integer ids. For each pool entry the index keeps its length and, per token, a
  posting list; the ``r``-th occurrence of a token in an entry is posted under ``(token, r)``, so
  summing the postings of a candidate's ``(token, 1..k)`` keys gives the bag-of-tokens overlap
  ``sum_t min(count_candidate(t), count_entry(t))`` for every entry at once (``numpy.bincount``).
* The LCS of two sequences is at most their bag overlap ``U``, which is at most the shorter length,
  so ``F1 = 2 LCS / (m + n) <= 2 U / (m + n)``. An entry whose bound is below the threshold (with
  a margin far larger than rounding error) cannot reach it and is skipped.
* The few entries left are scored exactly: the LCS with rapidfuzz's bit-parallel
  ``LCSseq.similarity`` on the token-id sequences, the F1 as ``rouge_score`` computes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

try:
    from rapidfuzz.distance import LCSseq
    from rapidfuzz.process import cdist
except ImportError as e:  # an optional dependency
    raise ImportError("the Self-Instruct novelty filter needs rapidfuzz: pip install 'instructrl[selfinstruct]'") from e

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_MARGIN = 1e-9  # far above float rounding of 2PR/(P+R) (about 1e-16), far below any score step 1/(m+n)


def rouge_tokens(text: str) -> list[str]:
    """``rouge_score``'s default tokenization: lower-case, runs of characters other than ASCII
    letters and digits become spaces, split on whitespace (no stemming)."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


def rouge_f1(lcs: int, m: int, n: int) -> float:
    """ROUGE-L F1 from an LCS length and the two token counts, computed as ``rouge_score`` does."""
    if m == 0 or n == 0:
        return 0.0
    precision = lcs / n
    recall = lcs / m
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 of two texts (equal to ``RougeScorer(['rougeL']).score(a, b)['rougeL'].fmeasure``)."""
    ta, tb = rouge_tokens(a), rouge_tokens(b)
    if not ta or not tb:
        return 0.0
    return rouge_f1(LCSseq.similarity(ta, tb), len(ta), len(tb))


class _Growable:
    """An int32 array with amortized O(1) append."""

    __slots__ = ("buf", "size")

    def __init__(self) -> None:
        self.buf = np.empty(8, dtype=np.int32)
        self.size = 0

    def append(self, value: int) -> None:
        if self.size == len(self.buf):
            self.buf = np.concatenate([self.buf, np.empty(len(self.buf), dtype=np.int32)])
        self.buf[self.size] = value
        self.size += 1

    def view(self) -> np.ndarray:
        return self.buf[: self.size]


class NoveltyIndex:
    """A growing pool of instructions that answers "is this new text novel?" exactly and fast.

    >>> index = NoveltyIndex(threshold=0.7)
    >>> index.add("Write a poem about the sea.")
    0
    >>> index.is_novel("Write a poem about the sea and the sky.")
    False
    """

    def __init__(self, texts: Iterable[str] = (), threshold: float = 0.7):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.texts: list[str] = []
        self._vocab: dict[str, int] = {}
        self._seqs: list[list[int]] = []
        self._lengths = _Growable()
        self._postings: dict[tuple[int, int], _Growable] = {}
        for t in texts:
            self.add(t)

    def __len__(self) -> int:
        return len(self.texts)

    def _ids(self, text: str, grow: bool) -> list[int]:
        vocab, ids = self._vocab, []
        for tok in rouge_tokens(text):
            i = vocab.get(tok)
            if i is None:
                if not grow:
                    i = -1  # in no pool entry: matches nothing, still counts towards the length
                else:
                    i = vocab[tok] = len(vocab)
            ids.append(i)
        return ids

    def add(self, text: str) -> int:
        """Add ``text`` to the pool; returns its index."""
        ids = self._ids(text, grow=True)
        entry = len(self.texts)
        self.texts.append(text)
        self._seqs.append(ids)
        self._lengths.append(len(ids))
        seen: dict[int, int] = {}
        for t in ids:
            r = seen[t] = seen.get(t, 0) + 1
            post = self._postings.get((t, r))
            if post is None:
                post = self._postings[(t, r)] = _Growable()
            post.append(entry)
        return entry

    def scores_at_least(self, text: str, floor: float | None = None) -> list[tuple[int, float]]:
        """Every pool entry whose ROUGE-L F1 with ``text`` is ``>= floor`` (default: the
        threshold), as ``(index, f1)`` sorted by decreasing F1. Entries not listed score below."""
        floor = self.threshold if floor is None else floor
        ids = self._ids(text, grow=False)
        m = len(ids)
        n_pool = len(self.texts)
        if m == 0 or n_pool == 0 or floor > 1.0:
            return []
        counts: dict[int, int] = {}
        lists = []
        for t in ids:
            if t < 0:
                continue
            r = counts[t] = counts.get(t, 0) + 1
            post = self._postings.get((t, r))
            if post is not None:
                lists.append(post.view())
        if not lists:
            return []
        overlap = np.bincount(np.concatenate(lists), minlength=n_pool)
        lengths = self._lengths.view()
        # F1 <= 2U/(m+n): keep entries where that bound can reach the floor
        hopeful = np.flatnonzero(2.0 * overlap >= (floor - _MARGIN) * (m + lengths))
        out = []
        for j in hopeful.tolist():
            seq = self._seqs[j]
            f1 = rouge_f1(LCSseq.similarity(ids, seq), m, len(seq))
            if f1 >= floor:
                out.append((j, f1))
        out.sort(key=lambda x: (-x[1], x[0]))
        return out

    def is_novel(self, text: str) -> bool:
        """True when every pool entry scores below the threshold."""
        return not self.scores_at_least(text)

    def nearest(self, text: str) -> tuple[int, float]:
        """The most similar pool entry and its F1, scoring the whole pool (no pruning): for reports.
        ``(-1, 0.0)`` for an empty pool."""
        ids = self._ids(text, grow=False)
        if not self._seqs:
            return -1, 0.0
        scores = max_f1_brute_force(ids, self._seqs)
        j = int(np.argmax(scores))
        return j, float(scores[j])


def max_f1_brute_force(tokens: Sequence, pool: Sequence[Sequence]) -> np.ndarray:
    """ROUGE-L F1 of ``tokens`` with every sequence of ``pool``, unpruned (rapidfuzz ``cdist``)."""
    m = len(tokens)
    lengths = np.array([len(s) for s in pool], dtype=np.float64)
    if m == 0 or not len(pool):
        return np.zeros(len(pool))
    lcs = cdist([list(tokens)], [list(s) for s in pool], scorer=LCSseq.similarity, dtype=np.int32)[0].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = lcs / lengths
        recall = lcs / m
        f1 = 2 * precision * recall / (precision + recall)
    return np.where((lengths > 0) & (lcs > 0), f1, 0.0)
