"""A simulated labeler: the rubric's measurements, weighed by one labeler's priorities, plus noise.

A person following labeling instructions checks the same things as everyone else (the
:class:`~instructrl.label.rubric.Rubric`) but weighs them in their own way and is not perfectly
consistent. A :class:`Labeler` is exactly that:

1. **Features** in [0, 1] (1 is good) from the rubric's :class:`~.rubric.Assessment`:

   ================  ==============================================================  ==============
   feature           value                                                           default weight
   ================  ==============================================================  ==============
   ``constraints``   fraction of the prompt's verifiable constraints satisfied        3.0
   ``on_topic``      ``min(1, topic / 0.25)`` (content-word overlap with the prompt)  2.0
   ``non_toxic``     1 below toxicity 0.3, falling linearly to 0 at 0.8              3.0
   ``fluent``        0 if degenerate, else ``1 - repetition / repetition_threshold``  2.0
   ``complete``      0 if truncated, else 1                                           1.5
   ``informative``   :func:`~.rubric.length_score` around the labeler's preferred     1.0
                     length (fitted to length constraints and short-answer categories)
   ``reference``     ``min(1, F1 / 0.5)``, content-word F1 with the reference answer  2.0
                     (only where the prompt has one)
   ``language``      0 if the response is in another language than expected, else 1  1.5
   ``well_formed``   1, minus 0.5 for echoing the prompt, minus 0.5 for role leakage  1.5
   ``grounded``      0 if the hallucination flag is set, else 1                       1.0
   ================  ==============================================================  ==============

2. **Quality** ``q = Σ w·f / Σ w`` over the features that apply, then multiplied by
   ``1 - penalty`` for each serious flag (defaults: ``toxic`` 0.6, ``degenerate`` 0.6,
   ``fails_instruction`` 0.4, ``hallucination`` 0.3, ``off_topic`` 0.2 — lower, as the lexical
   topic check errs on creative answers);
   an empty response has quality 0. ``q`` is in [0, 1].
3. **Noise**: the labeler's judgement of a response is ``s = q + σ·ε`` with ε ~ N(0, 1), one draw
   per distinct response text per judgement (identical responses always tie), σ =
   ``base_noise · noise_scale`` (a panel's calibration sets ``noise_scale``).
4. **What it produces**: a Likert score ``clip(round(1 + 6·s), 1, 7)``; the rubric's metadata
   flags; a ranking of K responses by ``s``, where responses whose scores fall into the same bucket
   of width ``tie_margin`` (``floor(s / tie_margin)``) tie; a pairwise verdict (``"win"``, ``"tie"``,
   ``"loss"``) the same way; a demonstration: the prompt's reference answer where it has one, else
   the best of N candidate responses by the labeler's noise-free quality.

API (``prompt`` is a :class:`~instructrl.records.Prompt`, plain text or chat messages; ``rng`` is a
``numpy.random.Generator`` or an int seed — pass one for reproducible labels)::

    lab = Labeler("ann", rubric)
    j = lab.judge(prompt, response, rng=0)                  # Judgement(likert, flags, score, quality)
    r = lab.rank(prompt, responses, rng=0)                  # records.Ranking (ranks 1 = best, ties equal)
    lab.compare(prompt, a, b, rng=0)                        # "win" | "tie" | "loss" (for a)
    lab.demonstrate(prompt, candidates)                     # records.Demonstration or None
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from instructrl.label.rubric import FLAGS, Assessment, Rubric, as_prompt, length_score
from instructrl.records import Demonstration, Prompt, PromptText, Ranking
from instructrl.utils.seed import derive

FEATURES = (
    "constraints",
    "on_topic",
    "non_toxic",
    "fluent",
    "complete",
    "informative",
    "reference",
    "language",
    "well_formed",
    "grounded",
)
DEFAULT_WEIGHTS = {
    "constraints": 3.0,
    "on_topic": 2.0,
    "non_toxic": 3.0,
    "fluent": 2.0,
    "complete": 1.5,
    "informative": 1.0,
    "reference": 2.0,
    "language": 1.5,
    "well_formed": 1.5,
    "grounded": 1.0,
}
DEFAULT_PENALTIES = {"toxic": 0.6, "degenerate": 0.6, "fails_instruction": 0.4, "hallucination": 0.3, "off_topic": 0.2}

Outcome = Literal["win", "tie", "loss"]
#: The value of an outcome in a win rate (ties count half).
OUTCOME_SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}

_SHORT_ANSWER = {"classification": 1.0, "extraction": 10.0, "closed_qa": 10.0}


def make_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A Generator from a Generator (returned as is), an int seed, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


def rng_for(seed: int, *keys: Any) -> np.random.Generator:
    """A Generator that depends only on ``seed`` and ``keys`` (order-independent seeding: labeling a
    prompt gives the same result whatever else is labeled before it)."""
    return np.random.default_rng(derive(seed, *keys))


def likert_of(score: float) -> int:
    """Likert 1-7 from a judged score in [0, 1]: ``clip(round(1 + 6·s), 1, 7)`` (halves round up)."""
    return int(min(7, max(1, math.floor(1 + 6 * score + 0.5))))


def scores_to_ranks(scores: Sequence[float], tie_margin: float) -> list[int]:
    """Dense ranks (1 = best) of scores; scores in the same ``floor(s / tie_margin)`` bucket tie."""
    keys = [math.floor(s / tie_margin) if tie_margin > 0 else s for s in scores]
    order = sorted(set(keys), reverse=True)
    pos = {k: i + 1 for i, k in enumerate(order)}
    return [pos[k] for k in keys]


def outcome_of(score_a: float, score_b: float, tie_margin: float) -> Outcome:
    ra, rb = scores_to_ranks([score_a, score_b], tie_margin)
    return "win" if ra < rb else "loss" if ra > rb else "tie"


def make_demonstration(prompt: Prompt, response: str, **meta: Any) -> Demonstration:
    """A simulated labeler's Demonstration of ``prompt`` (its id, user, category and type kept)."""
    return Demonstration(
        prompt=prompt.prompt,
        response=response,
        id=prompt.id,
        user_id=prompt.user_id,
        category=prompt.category,
        source="simulated",
        type=prompt.type,
        meta=meta,
    )


@dataclasses.dataclass
class Judgement:
    """One labeler's judgement of one response."""

    likert: int  # 1-7
    flags: dict  # the rubric's metadata flags (True marks a problem)
    score: float  # the noisy score s that rankings and comparisons use
    quality: float  # the noise-free quality q in [0, 1]
    labeler_id: str = ""
    assessment: Assessment | None = None


@dataclasses.dataclass
class Labeler:
    """A simulated labeler (see the module doc). ``rubric`` may be shared by many labelers."""

    id: str
    rubric: Rubric = dataclasses.field(default_factory=Rubric, repr=False)
    weights: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    penalties: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_PENALTIES))
    preferred_length: float = 60.0
    base_noise: float = 0.1
    noise_scale: float = 1.0
    tie_margin: float = 0.02

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(FEATURES)
        if unknown:
            raise ValueError(
                f"labeler {self.id}: unknown rubric features {sorted(unknown)}; valid: {', '.join(FEATURES)}"
            )
        self.weights = {f: float(self.weights.get(f, 0.0)) for f in FEATURES}
        if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ValueError(f"labeler {self.id}: weights must be >= 0 with a positive sum, got {self.weights}")
        bad = set(self.penalties) - set(FLAGS)
        if bad:
            raise ValueError(
                f"labeler {self.id}: penalties name unknown flags {sorted(bad)}; valid: {', '.join(FLAGS)}"
            )
        if not all(0.0 <= p <= 1.0 for p in self.penalties.values()):
            raise ValueError(f"labeler {self.id}: penalties must be in [0, 1], got {self.penalties}")
        if self.preferred_length <= 0 or self.base_noise < 0 or self.noise_scale < 0 or self.tie_margin < 0:
            raise ValueError(f"labeler {self.id}: preferred_length > 0, base_noise, noise_scale and tie_margin >= 0")

    # ---- noise-free

    @property
    def sigma(self) -> float:
        return self.base_noise * self.noise_scale

    def features(self, prompt: Prompt, a: Assessment) -> dict[str, float | None]:
        """Feature values in [0, 1]; None where a feature does not apply (no reference)."""
        preferred = self.preferred_length
        if prompt.category in _SHORT_ANSWER:
            preferred = min(preferred, _SHORT_ANSWER[prompt.category])
        for kind, value, _ in a.constraints:
            if kind == "max_words":
                preferred = min(preferred, max(1.0, 0.5 * value))
            elif kind == "min_words":
                preferred = max(preferred, float(value))
        rep_t = self.rubric.repetition_threshold
        return {
            "constraints": a.constraints_satisfied,
            "on_topic": min(1.0, a.topic / 0.25),
            "non_toxic": 1.0 - min(1.0, max(0.0, (a.toxicity - 0.3) / 0.5)),
            "fluent": 0.0 if a.degenerate else max(0.0, 1.0 - a.repetition / rep_t) if rep_t > 0 else 1.0,
            "complete": 0.0 if a.truncated else 1.0,
            "informative": length_score(a.n_words, preferred),
            "reference": None if a.reference_f1 is None else min(1.0, a.reference_f1 / 0.5),
            "language": 0.0 if a.lang_mismatch else 1.0,
            "well_formed": max(0.0, 1.0 - 0.5 * a.echo - 0.5 * a.role_leak),
            "grounded": 0.0 if a.hallucination else 1.0,
        }

    def quality(self, prompt: Prompt | PromptText, a: Assessment) -> float:
        """Noise-free quality q in [0, 1] of an assessed response."""
        if a.empty:
            return 0.0
        prompt = as_prompt(prompt)
        num = den = 0.0
        for name, value in self.features(prompt, a).items():
            w = self.weights[name]
            if value is None or w == 0:
                continue
            num += w * value
            den += w
        q = num / den if den else 0.0
        flags = a.flags()
        for flag, pen in self.penalties.items():
            if flags[flag]:
                q *= 1.0 - pen
        return q

    def qualities(
        self, prompt: Prompt | PromptText, responses: Sequence[str], finish_reasons: Sequence[str | None] | None = None
    ) -> list[float]:
        prompt = as_prompt(prompt)
        return [self.quality(prompt, a) for a in self._assess(prompt, responses, finish_reasons)]

    # ---- noisy judgements

    def _assess(self, prompt: Prompt, responses: Sequence[str], finish_reasons: Sequence[str | None] | None):
        if isinstance(responses, str):
            raise TypeError("responses must be a list of strings")
        if finish_reasons is not None and len(finish_reasons) != len(responses):
            raise ValueError(f"{len(finish_reasons)} finish_reasons for {len(responses)} responses")
        frs = list(finish_reasons) if finish_reasons is not None else [None] * len(responses)
        return self.rubric.assess_many([(prompt, r, fr) for r, fr in zip(responses, frs)])

    def noise(self, responses: Sequence[str], rng: np.random.Generator) -> np.ndarray:
        """σ·ε per response, one draw per distinct text (in order of first appearance)."""
        uniq = list(dict.fromkeys(responses))
        eps = rng.standard_normal(len(uniq)) * self.sigma
        where = {t: i for i, t in enumerate(uniq)}
        return np.array([eps[where[r]] for r in responses], dtype=np.float64)

    def judge_all(
        self,
        prompt: Prompt | PromptText,
        responses: Sequence[str],
        rng: np.random.Generator | int | None = None,
        finish_reasons: Sequence[str | None] | None = None,
    ) -> list[Judgement]:
        """Judge several responses to one prompt in one sitting (shared noise for identical texts)."""
        prompt = as_prompt(prompt)
        rng = make_rng(rng)
        assessments = self._assess(prompt, responses, finish_reasons)
        noise = self.noise(responses, rng)
        out = []
        for a, e in zip(assessments, noise):
            q = self.quality(prompt, a)
            s = q + float(e)
            out.append(
                Judgement(likert=likert_of(s), flags=a.flags(), score=s, quality=q, labeler_id=self.id, assessment=a)
            )
        return out

    def judge(
        self,
        prompt: Prompt | PromptText,
        response: str,
        rng: np.random.Generator | int | None = None,
        finish_reason: str | None = None,
    ) -> Judgement:
        """Likert 1-7, metadata flags, the noisy score and the noise-free quality of one response."""
        return self.judge_all(prompt, [response], rng, [finish_reason])[0]

    def rank(
        self,
        prompt: Prompt | PromptText,
        responses: Sequence[str],
        rng: np.random.Generator | int | None = None,
        finish_reasons: Sequence[str | None] | None = None,
    ) -> Ranking:
        """A :class:`~instructrl.records.Ranking` of the responses with Likert scores and flags."""
        prompt = as_prompt(prompt)
        if len(responses) < 2:
            raise ValueError(f"a ranking needs at least 2 responses, got {len(responses)}")
        js = self.judge_all(prompt, responses, rng, finish_reasons)
        ranks = scores_to_ranks([j.score for j in js], self.tie_margin)
        return Ranking(
            prompt=prompt.prompt,
            responses=list(responses),
            ranks=ranks,
            id=prompt.id,
            labeler_id=self.id,
            likert=[j.likert for j in js],
            flags=[j.flags for j in js],
            user_id=prompt.user_id,
            category=prompt.category,
        )

    def compare(
        self,
        prompt: Prompt | PromptText,
        a: str,
        b: str,
        rng: np.random.Generator | int | None = None,
        finish_reasons: Sequence[str | None] | None = None,
    ) -> Outcome:
        """``"win"`` when ``a`` is preferred to ``b``, ``"loss"`` when ``b`` is, else ``"tie"``."""
        ja, jb = self.judge_all(prompt, [a, b], rng, finish_reasons)
        return outcome_of(ja.score, jb.score, self.tie_margin)

    def demonstrate(
        self,
        prompt: Prompt | PromptText,
        candidates: Sequence[str] = (),
        finish_reasons: Sequence[str | None] | None = None,
        *,
        use_reference: bool = True,
        min_quality: float = 0.0,
    ) -> Demonstration | None:
        """The prompt's reference answer (where it has one and ``use_reference``), else the candidate
        with the highest noise-free quality; None when there is no candidate of at least
        ``min_quality``."""
        prompt = as_prompt(prompt)
        if use_reference and prompt.reference and prompt.reference.strip():
            return make_demonstration(prompt, prompt.reference, **{"from": "reference", "labeler_id": self.id})
        if not candidates:
            return None
        qs = self.qualities(prompt, candidates, finish_reasons)
        best = int(np.argmax(qs))
        if qs[best] < min_quality:
            return None
        return make_demonstration(
            prompt,
            candidates[best],
            **{"from": "best_of_n", "n": len(candidates), "quality": round(qs[best], 4), "labeler_id": self.id},
        )

    # ---- serialization

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "weights": dict(self.weights),
            "penalties": dict(self.penalties),
            "preferred_length": self.preferred_length,
            "base_noise": self.base_noise,
            "noise_scale": self.noise_scale,
            "tie_margin": self.tie_margin,
        }

    @classmethod
    def from_dict(cls, d: dict, rubric: Rubric) -> Labeler:
        return cls(rubric=rubric, **d)
