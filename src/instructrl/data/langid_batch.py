"""Language identification with ``langid``'s model, many texts at a time.

``langid.classify`` walks each text byte by byte in a Python loop and costs milliseconds per
prompt on this machine: hours for a million prompts. :class:`BatchLangId` runs the same model
(the same byte n-gram automaton and the same naive Bayes weights) on a whole batch with numpy:

1. The automaton advances every text of the batch by one byte per step (texts sorted by length so
   the ones still running are a prefix), recording the state after each byte.
2. ``langid`` counts the n-gram features that each visited state emits and multiplies the feature
   counts by the per-language weights. Both steps are linear, so they fold into one precomputed
   matrix ``W[state, language]`` (the weights of every feature a state emits, summed), and the
   scores of a batch are one sparse-times-dense product ``visits @ W`` plus the class priors.

The result is the language ``langid.classify`` returns (a unit test checks the two agree); only
the first ``max_bytes`` bytes of a text are read.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np


class BatchLangId:
    """``langid``'s language identifier for batches of texts."""

    def __init__(self, languages: Sequence[str] | None = None, max_bytes: int = 4096):
        from langid.langid import LanguageIdentifier, model

        ident = LanguageIdentifier.from_modelstring(model)
        if languages:
            ident.set_languages(list(languages))
        self.languages: list[str] = [str(c) for c in ident.nb_classes]
        self.max_bytes = int(max_bytes)
        self._nextmove = np.asarray(ident.tk_nextmove, dtype=np.int64)
        n_states = len(self._nextmove) // 256
        rows, cols = [], []
        for state, feats in ident.tk_output.items():
            rows.extend([state] * len(feats))
            cols.extend(feats)
        # W = emit @ ptc, computed densely per state without scipy: sum the weight rows of the
        # features each state emits (duplicates count twice, as in langid's instance2fv).
        ptc = np.asarray(ident.nb_ptc, dtype=np.float64)
        w = np.zeros((n_states, ptc.shape[1]), dtype=np.float64)
        np.add.at(w, np.asarray(rows, dtype=np.int64), ptc[np.asarray(cols, dtype=np.int64)])
        self._w = w
        self._prior = np.asarray(ident.nb_pc, dtype=np.float64)
        self.n_states = n_states

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Unnormalized log-probabilities, shape ``(len(texts), len(self.languages))``."""
        from scipy.sparse import csr_matrix

        n = len(texts)
        if n == 0:
            return np.zeros((0, len(self.languages)))
        enc = [t.encode("utf-8")[: self.max_bytes] for t in texts]
        lens = np.fromiter((len(e) for e in enc), dtype=np.int64, count=n)
        flat = np.frombuffer(b"".join(enc), dtype=np.uint8).astype(np.int64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        order = np.argsort(-lens, kind="stable")
        starts = offsets[:-1][order]
        sorted_lens = lens[order]
        visits = np.empty(flat.size, dtype=np.int64)
        state = np.zeros(n, dtype=np.int64)
        maxlen = int(sorted_lens[0])
        # active[j] = how many texts are longer than j bytes (a prefix of the sorted order)
        active = np.searchsorted(-sorted_lens, -np.arange(maxlen), side="left")
        nextmove = self._nextmove
        for j in range(maxlen):
            k = active[j]
            pos = starts[:k] + j
            s = nextmove[(state[:k] << 8) + flat[pos]]
            state[:k] = s
            visits[pos] = s
        counts = csr_matrix((np.ones(flat.size), visits, offsets), shape=(n, self.n_states))
        return np.asarray(counts @ self._w) + self._prior

    def classify(self, texts: Sequence[str]) -> list[str]:
        """The most likely language code of each text (``langid.classify(text)[0]``)."""
        if not texts:
            return []
        best = np.argmax(self.scores(texts), axis=1)
        langs = self.languages
        return [langs[i] for i in best]


@functools.lru_cache(maxsize=4)
def get_identifier(languages: tuple[str, ...] = (), max_bytes: int = 4096) -> BatchLangId:
    """A shared :class:`BatchLangId` (building one unpacks langid's model: about two seconds)."""
    return BatchLangId(languages or None, max_bytes)
