"""Toxicity: the probability that a text is offensive, in [0, 1], batched and cached.

The classifier is ``alt-profanity-check``: a linear model over character and word n-grams that
ships inside the PyPI package, so it runs offline. It is a profanity model, trained on English,
and errs on short texts (0.6 for "The chicken breast should be cooked thoroughly."; 0.8 for "Damn,
that was close!"; 0.9-1.0 for insults): callers should set high thresholds. Where the package is
missing, a small built-in lexicon of profanity and insults stands in: cruder, but offline too.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from collections.abc import Sequence

from instructrl.text.constraints import word_pattern

log = logging.getLogger(__name__)

BACKENDS = ("auto", "profanity-check", "lexicon", "none")

# A fallback for installations without alt-profanity-check: whole-word matches of strong
# profanity and direct insults. Each hit adds to a probability-like score.
_LEXICON = {
    "fuck": 0.95,
    "fucking": 0.95,
    "fucked": 0.95,
    "motherfucker": 0.99,
    "shit": 0.85,
    "bullshit": 0.85,
    "bitch": 0.9,
    "bastard": 0.9,
    "asshole": 0.95,
    "dick": 0.7,
    "cunt": 0.99,
    "whore": 0.95,
    "slut": 0.95,
    "idiot": 0.85,
    "idiots": 0.85,
    "moron": 0.85,
    "morons": 0.85,
    "stupid": 0.6,
    "dumb": 0.55,
    "loser": 0.6,
    "retard": 0.95,
    "retarded": 0.95,
    "damn": 0.5,
    "crap": 0.6,
    "piss": 0.6,
    "pissed": 0.55,
    "shut up": 0.8,
    "kill yourself": 0.99,
    "go to hell": 0.85,
    "hate you": 0.8,
    "worthless": 0.6,
}
_LEXICON_RE = {w: word_pattern(w) for w in _LEXICON}


def lexicon_toxicity(text: str) -> float:
    """Probability-like toxicity from the built-in lexicon: ``1 - Π(1 - p_w)`` over the words found."""
    keep = 1.0
    for w, p in _LEXICON.items():
        if _LEXICON_RE[w].search(text):
            keep *= 1.0 - p
    return 1.0 - keep


class ToxicityScorer:
    """Toxicity probabilities in [0, 1], batched and cached.

    ``backend``: ``"profanity-check"`` (alt-profanity-check's shipped model), ``"lexicon"`` (the
    built-in word list), ``"auto"`` (profanity-check where installed, else the lexicon with a
    warning) or ``"none"`` (always 0)."""

    def __init__(self, backend: str = "auto", cache_size: int = 200_000):
        if backend not in BACKENDS:
            raise ValueError(f"toxicity backend must be auto, profanity-check, lexicon or none, got {backend!r}")
        self.requested = backend
        self.backend: str | None = None
        self._predict = None
        self._cache: OrderedDict[tuple[str, bool], float] = OrderedDict()
        self.cache_size = cache_size

    def _load(self) -> None:
        if self.backend is not None:
            return
        if self.requested in ("auto", "profanity-check"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # sklearn version notes on unpickling
                    from profanity_check import predict_prob
                self._predict = predict_prob
                self.backend = "profanity-check"
                return
            except ImportError:
                if self.requested == "profanity-check":
                    raise ImportError(
                        "toxicity backend 'profanity-check' needs alt-profanity-check: pip install 'instructrl[label]'"
                    ) from None
                log.warning(
                    "alt-profanity-check is not installed; toxicity falls back to a small built-in lexicon "
                    "(pip install 'instructrl[label]' for the classifier)"
                )
                self.backend = "lexicon"
                return
        self.backend = self.requested

    def scores(self, texts: Sequence[str], english: Sequence[bool] | None = None) -> list[float]:
        """Toxicity of each text. ``english[i] = False`` scores text i with the lexicon: the
        classifier was trained on English and reads other languages as noise (0.4 for a plain
        French sentence about the sea)."""
        self._load()
        english = [True] * len(texts) if english is None else list(english)
        keys = [(t, e or self.backend != "profanity-check") for t, e in zip(texts, english)]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            probs = [0.0] * len(missing)
            if self.backend == "profanity-check":
                clf = [i for i, (_, e) in enumerate(missing) if e]
                for i, p in zip(clf, self._predict([missing[i][0] for i in clf]) if clf else []):
                    probs[i] = float(p)
                for i, (t, e) in enumerate(missing):
                    if not e:
                        probs[i] = lexicon_toxicity(t)
            elif self.backend == "lexicon":
                probs = [lexicon_toxicity(t) for t, _ in missing]
            for k, p in zip(missing, probs):
                self._cache[k] = p
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return [self._cache.get(k, 0.0) for k in keys]
