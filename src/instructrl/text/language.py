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
the first ``max_bytes`` bytes of a text are read. The folded arrays are cached on disk, so later
runs (and worker processes) load them in milliseconds instead of unpacking langid's model.

:func:`detect_languages` is the entry for callers that must run without the optional ``langid``
and ``scipy`` (the ``label`` extra): every language is then None (unknown).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class BatchLangId:
    """``langid``'s language identifier for batches of texts."""

    def __init__(self, languages: Sequence[str] | None = None, max_bytes: int = 4096, cache: bool = True):
        self.max_bytes = int(max_bytes)
        path = _cache_path(languages) if cache else None
        if path is not None and path.exists():
            try:
                with np.load(path) as z:
                    self._set(list(z["languages"]), z["nextmove"], z["w"], z["prior"])
                return
            except (OSError, ValueError, KeyError):
                pass  # a broken cache file is rebuilt below
        self._set(*_build(languages))
        if path is not None:
            _save(path, self)

    def _set(self, languages: list, nextmove: np.ndarray, w: np.ndarray, prior: np.ndarray) -> None:
        self.languages: list[str] = [str(c) for c in languages]
        self._nextmove = np.asarray(nextmove, dtype=np.int64)
        self._w = np.asarray(w, dtype=np.float64)
        self._prior = np.asarray(prior, dtype=np.float64)
        self.n_states = len(self._nextmove) // 256

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


def _build(languages: Sequence[str] | None) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """langid's model as (languages, automaton transitions, W[state, language], priors)."""
    from langid.langid import LanguageIdentifier, model

    ident = LanguageIdentifier.from_modelstring(model)
    if languages:
        ident.set_languages(list(languages))
    nextmove = np.asarray(ident.tk_nextmove, dtype=np.int32)
    n_states = len(nextmove) // 256
    rows, cols = [], []
    for state, feats in ident.tk_output.items():
        rows.extend([state] * len(feats))
        cols.extend(feats)
    # W = emit @ ptc: sum the weight rows of the features each state emits (a feature listed twice
    # counts twice, as in langid's instance2fv)
    ptc = np.asarray(ident.nb_ptc, dtype=np.float64)
    w = np.zeros((n_states, ptc.shape[1]), dtype=np.float64)
    np.add.at(w, np.asarray(rows, dtype=np.int64), ptc[np.asarray(cols, dtype=np.int64)])
    return [str(c) for c in ident.nb_classes], nextmove, w, np.asarray(ident.nb_pc, dtype=np.float64)


def _cache_path(languages: Sequence[str] | None) -> Path | None:
    """Unpacking langid's model takes seconds (bz2 + pickle); the folded arrays load in milliseconds.
    Cached under ``$INSTRUCTRL_CACHE`` (default ``~/.cache/instructrl``), keyed by langid's version
    and the language subset."""
    try:
        from importlib.metadata import version

        tag = version("langid")
    except Exception:
        tag = "unknown"
    key = hashlib.sha1((tag + "|" + ",".join(sorted(languages or []))).encode()).hexdigest()[:12]
    root = Path(os.environ.get("INSTRUCTRL_CACHE", Path.home() / ".cache" / "instructrl"))
    return root / "langid" / f"model-{key}.npz"


def _save(path: Path, ident: BatchLangId) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
        with os.fdopen(fd, "wb") as fh:
            np.savez(
                fh,
                languages=np.array(ident.languages),
                nextmove=ident._nextmove.astype(np.int32),
                w=ident._w,
                prior=ident._prior,
            )
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: no cache, same results


@functools.lru_cache(maxsize=4)
def get_identifier(languages: tuple[str, ...] = (), max_bytes: int = 4096) -> BatchLangId:
    """A shared :class:`BatchLangId` (building one unpacks langid's model: about two seconds)."""
    return BatchLangId(languages or None, max_bytes)


_NO_LANGID: list[bool] = []  # non-empty once the missing-langid warning was logged


def detect_languages(texts: Sequence[str], max_bytes: int = 1024) -> list[str | None]:
    """``langid``'s language of each text, batched (the shared :func:`get_identifier`).
    Without langid and scipy (the ``label`` extra) every language is None (unknown), with a warning."""
    if not texts:
        return []
    try:
        return get_identifier((), max_bytes).classify(list(texts))
    except ImportError:
        if not _NO_LANGID:
            _NO_LANGID.append(True)
            log.warning("langid/scipy are not installed: language checks are skipped (pip install 'instructrl[label]')")
        return [None] * len(texts)
