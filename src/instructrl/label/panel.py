"""Panels of simulated labelers: a calibrated training panel and a separate held-out panel.

InstructGPT's rankings came from about 40 contractors who agreed with each other on 72.6 ± 1.5% of
pairwise comparisons; its evaluations also used held-out labelers who produced no training data
(77.3 ± 1.3% among themselves). A :class:`Panel` is a set of :class:`~.labeler.Labeler` s that share
one :class:`~.rubric.Rubric` but differ in their weights, preferred length and noise
(:func:`make_labelers` draws them: every weight is the documented default times ``exp(N(0, j²))``
for ``j = weight_jitter``, the preferred length is 60 words times ``exp(N(0, 0.4²))``, the base
noise is ``noise`` times ``U(0.75, 1.25)``). Every item (a ranking, a comparison, a Likert score)
is labeled by one labeler drawn at random, as one contractor labeled each comparison.

Agreement
---------
Two labelers' verdicts on a pair of responses are each ``+1`` (the first is better), ``0`` (tie)
or ``-1``; they agree by ``1 - |a - b| / 2``: 1 for the same verdict, 1/2 when one says tie, 0
for opposite verdicts. The agreement of a panel on some data is the mean over all pairs of its
labelers and all response pairs of every prompt (:func:`pairwise_agreement` for one pair of
rankings, :meth:`Panel.agreement` for a panel, by actually ranking the data).

Calibration
-----------
:meth:`Panel.calibrate` scales every labeler's noise by one factor ``c`` so that the panel's
agreement on the given data hits a target (0.73 by default). The expected agreement as a
function of ``c`` is computed with common random numbers (fixed normal draws, so that it is a
smooth, decreasing function of ``c``), vectorized over labelers, prompts and response pairs, and
solved by bisection. It then measures the agreement by ranking the data afresh with the calibrated
panel (a second implementation of the same quantity, with new noise) and reports both. Where even
noise-free labelers agree less than the target (their weights disagree too much for the data), it
sets ``c = 0`` and reports the ceiling.

API::

    train, heldout = make_panels(PanelConfig())                   # label/config.py documents the fields
    cal = train.calibrate(groups, target=0.73, seed=0)            # groups: [(prompt, responses[, finish_reasons])]
    cal.measured, cal.noise_scale
    train.rank(prompt, responses, rng)            -> records.Ranking (one random labeler; Likert, flags)
    train.demonstrate(prompt, candidates, rng)    -> records.Demonstration | None
    heldout.judge(prompt, response, rng)          -> Judgement(likert, flags, score, quality, labeler_id)
    heldout.compare(prompt, a, b, rng)            -> "win" | "tie" | "loss"   (OUTCOME_SCORE gives 1, .5, 0)
    heldout.compare_many(prompts, a_list, b_list, seed)   (batched assessments, order-independent seeding)
    train.save("panel.json"); Panel.load("panel.json")
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from instructrl.label.labeler import (
    DEFAULT_PENALTIES,
    DEFAULT_WEIGHTS,
    Judgement,
    Labeler,
    Outcome,
    make_rng,
    rng_for,
)
from instructrl.label.rubric import Rubric, as_prompt
from instructrl.records import Demonstration, Prompt, PromptText, Ranking, atomic_write_text

Group = tuple  # (prompt, responses) or (prompt, responses, finish_reasons)


# --------------------------------------------------------------------------- agreement (pure)


def pair_verdicts(ranks: Sequence[int]) -> np.ndarray:
    """Verdicts of every response pair ``i < j`` (row-major): +1 if i is ranked better, 0 tie, -1."""
    r = np.asarray(ranks)
    i, j = np.triu_indices(len(r), k=1)
    return np.sign(r[j] - r[i]).astype(np.int64)


def pairwise_agreement(ranks_a: Sequence[int], ranks_b: Sequence[int]) -> tuple[float, int]:
    """``(sum of agreements, number of response pairs)`` of two rankings of the same responses:
    a pair scores 1 for the same verdict, 1/2 when exactly one of them is a tie, 0 when opposite."""
    if len(ranks_a) != len(ranks_b):
        raise ValueError(f"rankings of different lengths: {len(ranks_a)} and {len(ranks_b)}")
    va, vb = pair_verdicts(ranks_a), pair_verdicts(ranks_b)
    return float(np.sum(1.0 - np.abs(va - vb) / 2.0)), int(va.size)


@dataclasses.dataclass
class Calibration:
    """What :meth:`Panel.calibrate` found."""

    target: float
    noise_scale: float  # the factor applied to every labeler's base noise
    fitted: float  # expected agreement at noise_scale (common random numbers)
    measured: float  # agreement measured by ranking the data afresh with the calibrated panel
    ceiling: float  # agreement of the noise-free labelers (the most this panel can reach)
    n_prompts: int
    n_comparisons: int  # response pairs per labeler pair (all repeats)
    repeats: int  # passes over the data, each with fresh noise
    reached: bool  # |measured - target| <= tolerance

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _norm_group(g: Any, i: int) -> tuple[Prompt, list[str], list]:
    if not isinstance(g, (tuple, list)) or len(g) not in (2, 3):
        raise ValueError(f"groups[{i}]: expected (prompt, responses[, finish_reasons])")
    p, rs = as_prompt(g[0]), list(g[1])
    frs = list(g[2]) if len(g) == 3 and g[2] is not None else [None] * len(rs)
    if len(rs) < 2:
        raise ValueError(f"groups[{i}]: at least 2 responses are needed to compare, got {len(rs)}")
    if len(frs) != len(rs):
        raise ValueError(f"groups[{i}]: {len(frs)} finish_reasons for {len(rs)} responses")
    return p, rs, frs


# --------------------------------------------------------------------------- panel


class Panel:
    """Several labelers sharing one rubric; each item is labeled by one of them, drawn at random."""

    def __init__(self, labelers: Sequence[Labeler], name: str = "panel"):
        if not labelers:
            raise ValueError("a panel needs at least one labeler")
        ids = [lab.id for lab in labelers]
        if len(set(ids)) != len(ids):
            raise ValueError(f"labeler ids must be unique, got {ids}")
        self.labelers, self.name = list(labelers), name
        self.rubric = labelers[0].rubric
        for lab in self.labelers:
            lab.rubric = self.rubric
        self.calibration: Calibration | None = None

    def __len__(self) -> int:
        return len(self.labelers)

    def labeler(self, labeler_id: str) -> Labeler:
        for lab in self.labelers:
            if lab.id == labeler_id:
                return lab
        raise KeyError(f"no labeler {labeler_id!r} in panel {self.name}; labelers: {[x.id for x in self.labelers]}")

    def pick(self, rng: np.random.Generator) -> Labeler:
        return self.labelers[int(rng.integers(len(self.labelers)))]

    # ---- labeling

    def rank(
        self,
        prompt: Prompt | PromptText,
        responses: Sequence[str],
        rng: np.random.Generator | int | None = None,
        finish_reasons: Sequence[str | None] | None = None,
    ) -> Ranking:
        """A ranking (with Likert scores and flags) by one labeler drawn at random."""
        rng = make_rng(rng)
        return self.pick(rng).rank(prompt, responses, rng, finish_reasons)

    def judge(
        self,
        prompt: Prompt | PromptText,
        response: str,
        rng: np.random.Generator | int | None = None,
        finish_reason: str | None = None,
    ) -> Judgement:
        rng = make_rng(rng)
        return self.pick(rng).judge(prompt, response, rng, finish_reason)

    def compare(
        self,
        prompt: Prompt | PromptText,
        a: str,
        b: str,
        rng: np.random.Generator | int | None = None,
        finish_reasons: Sequence[str | None] | None = None,
    ) -> Outcome:
        """``"win"`` / ``"tie"`` / ``"loss"`` for response ``a`` against ``b``, by one random labeler."""
        rng = make_rng(rng)
        return self.pick(rng).compare(prompt, a, b, rng, finish_reasons)

    def demonstrate(
        self,
        prompt: Prompt | PromptText,
        candidates: Sequence[str] = (),
        rng: np.random.Generator | int | None = None,
        finish_reasons: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> Demonstration | None:
        """The reference answer, else the best candidate by one random labeler's rubric (see
        :meth:`Labeler.demonstrate` for ``use_reference`` and ``min_quality``)."""
        rng = make_rng(rng)
        return self.pick(rng).demonstrate(prompt, candidates, finish_reasons, **kwargs)

    # ---- batched, order-independent seeding (rng_for(seed, i))

    def prefetch(self, items: Sequence[tuple]) -> None:
        """Assess ``(prompt, response[, finish_reason])`` items in one batch (fills the rubric cache)."""
        self.rubric.assess_many(items)

    def rank_many(self, groups: Sequence[Group], seed: int = 0) -> list[Ranking]:
        norm = [_norm_group(g, i) for i, g in enumerate(groups)]
        self.prefetch([(p, r, f) for p, rs, frs in norm for r, f in zip(rs, frs)])
        return [self.rank(p, rs, rng_for(seed, self.name, "rank", i), frs) for i, (p, rs, frs) in enumerate(norm)]

    def judge_many(
        self,
        prompts: Sequence,
        responses: Sequence[str],
        seed: int = 0,
        finish_reasons: Sequence[str | None] | None = None,
    ) -> list[Judgement]:
        frs = list(finish_reasons) if finish_reasons is not None else [None] * len(responses)
        if not len(prompts) == len(responses) == len(frs):
            raise ValueError("prompts, responses (and finish_reasons) must have the same length")
        prompts = [as_prompt(p) for p in prompts]
        self.prefetch(list(zip(prompts, responses, frs)))
        return [
            self.judge(p, r, rng_for(seed, self.name, "judge", i), f)
            for i, (p, r, f) in enumerate(zip(prompts, responses, frs))
        ]

    def compare_many(self, prompts: Sequence, a: Sequence[str], b: Sequence[str], seed: int = 0) -> list[Outcome]:
        if not len(prompts) == len(a) == len(b):
            raise ValueError("prompts, a and b must have the same length")
        prompts = [as_prompt(p) for p in prompts]
        self.prefetch([(p, x) for p, x in zip(prompts, a)] + [(p, y) for p, y in zip(prompts, b)])
        return [
            self.compare(p, x, y, rng_for(seed, self.name, "compare", i))
            for i, (p, x, y) in enumerate(zip(prompts, a, b))
        ]

    # ---- agreement and calibration

    def agreement(self, groups: Sequence[Group], seed: int = 0, other: Panel | None = None, repeats: int = 1) -> float:
        """Mean agreement between every two labelers of this panel (or, with ``other``, between
        each labeler here and each there), measured by having each labeler rank every group
        (``repeats`` times, with fresh noise each time, to measure small data sets precisely)."""
        norm = [_norm_group(g, i) for i, g in enumerate(groups)]
        self.prefetch([(p, r, f) for p, rs, frs in norm for r, f in zip(rs, frs)])
        labs = self.labelers + ([] if other is None else other.labelers)
        ranks = {
            lab.id: [
                lab.rank(p, rs, rng_for(seed, "agreement", lab.id, i, t), frs).ranks
                for t in range(repeats)
                for i, (p, rs, frs) in enumerate(norm)
            ]
            for lab in labs
        }
        if other is None:
            if len(self.labelers) < 2:
                raise ValueError("agreement needs at least two labelers")
            pairs = list(itertools.combinations([x.id for x in self.labelers], 2))
        else:
            pairs = [(x.id, y.id) for x in self.labelers for y in other.labelers]
        total = count = 0.0
        for a, b in pairs:
            for ra, rb in zip(ranks[a], ranks[b]):
                s, n = pairwise_agreement(ra, rb)
                total += s
                count += n
        return total / count

    def _calibration_arrays(self, norm: list, seed: int, repeats: int) -> tuple:
        """Q[l, g, k] noise-free qualities, E[l, g, k] fixed normal draws (shared by identical texts),
        valid[g, i, j] response pairs i < j that exist; the groups are repeated ``repeats`` times,
        each time with new draws."""
        n_l, n_g = len(self.labelers), len(norm)
        kmax = max(len(rs) for _, rs, _ in norm)
        q = np.zeros((n_l, n_g, kmax))
        valid = np.zeros((n_g, kmax, kmax), dtype=bool)
        uniq_idx = []
        for g, (p, rs, frs) in enumerate(norm):
            k = len(rs)
            valid[g, :k, :k] = np.triu(np.ones((k, k), dtype=bool), 1)
            uniq = {t: i for i, t in enumerate(dict.fromkeys(rs))}
            uniq_idx.append([uniq[r] for r in rs])
            for li, lab in enumerate(self.labelers):
                q[li, g, :k] = lab.qualities(p, rs, frs)
        rng = np.random.default_rng(seed)
        e = np.zeros((n_l, repeats * n_g, kmax))
        for t in range(repeats):
            for g, idx in enumerate(uniq_idx):
                for li in range(n_l):
                    e[li, t * n_g + g, : len(idx)] = rng.standard_normal(max(idx) + 1)[idx]
        return np.tile(q, (1, repeats, 1)), e, np.tile(valid, (repeats, 1, 1))

    def _expected_agreement(self, c: float, q: np.ndarray, e: np.ndarray, valid: np.ndarray) -> float:
        sig = np.array([lab.base_noise for lab in self.labelers])[:, None, None]
        s = q + c * sig * e
        m = np.array([lab.tie_margin for lab in self.labelers])[:, None, None]
        keys = np.where(m > 0, np.floor(s / np.where(m > 0, m, 1.0)), s)
        verdict = np.sign(keys[:, :, :, None] - keys[:, :, None, :])  # [l, g, i, j] +1: i better
        total = 0.0
        pairs = list(itertools.combinations(range(len(self.labelers)), 2))
        for a, b in pairs:
            agree = 1.0 - np.abs(verdict[a] - verdict[b]) / 2.0
            total += float(agree[valid].mean())
        return total / len(pairs)

    def calibrate(
        self,
        groups: Sequence[Group],
        target: float = 0.73,
        seed: int = 0,
        tolerance: float = 0.02,
        iterations: int = 30,
        min_comparisons: int = 4000,
        max_repeats: int = 20,
    ) -> Calibration:
        """Set every labeler's ``noise_scale`` so that the panel's agreement on ``groups`` is
        ``target``; see the module doc. Small data is gone over several times with fresh noise
        (``repeats``, up to ``max_repeats``) until each labeler pair has at least
        ``min_comparisons`` response pairs, for fitting and for measuring alike. Returns (and
        stores in ``self.calibration``) the result."""
        if not 0.0 < target < 1.0:
            raise ValueError(f"target agreement must be in (0, 1), got {target}")
        if len(self.labelers) < 2:
            raise ValueError("calibration needs a panel of at least two labelers")
        norm = [_norm_group(g, i) for i, g in enumerate(groups)]
        if not norm:
            raise ValueError("calibration needs at least one group of responses")
        self.prefetch([(p, r, f) for p, rs, frs in norm for r, f in zip(rs, frs)])
        if all(lab.base_noise == 0 for lab in self.labelers):
            raise ValueError("every labeler has base_noise 0: there is no noise to scale")
        n_pairs = sum(len(rs) * (len(rs) - 1) // 2 for _, rs, _ in norm)
        repeats = max(1, min(max_repeats, math.ceil(min_comparisons / n_pairs)))
        q, e, valid = self._calibration_arrays(norm, seed, repeats)
        f = lambda c: self._expected_agreement(c, q, e, valid)  # noqa: E731
        ceiling = f(0.0)
        if ceiling <= target:
            c = 0.0
        else:
            lo, hi = 0.0, 1.0
            while f(hi) > target and hi < 2.0**12:
                lo, hi = hi, hi * 2
            for _ in range(iterations):
                mid = 0.5 * (lo + hi)
                if f(mid) > target:
                    lo = mid
                else:
                    hi = mid
            c = 0.5 * (lo + hi)
        for lab in self.labelers:
            lab.noise_scale = c
        measured = self.agreement(groups, seed=seed + 1, repeats=repeats)
        n_cmp = int(valid.sum())
        self.calibration = Calibration(
            target=target,
            noise_scale=c,
            fitted=f(c),
            measured=measured,
            ceiling=ceiling,
            n_prompts=len(norm),
            n_comparisons=n_cmp,
            repeats=repeats,
            reached=abs(measured - target) <= tolerance,
        )
        return self.calibration

    # ---- serialization

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "rubric": self.rubric.settings(),
            "labelers": [lab.to_dict() for lab in self.labelers],
            "calibration": self.calibration.to_dict() if self.calibration else None,
        }

    @classmethod
    def from_dict(cls, d: dict, rubric: Rubric | None = None) -> Panel:
        rubric = rubric or Rubric(**d.get("rubric", {}))
        panel = cls([Labeler.from_dict(x, rubric) for x in d["labelers"]], name=d.get("name", "panel"))
        if d.get("calibration"):
            panel.calibration = Calibration(**d["calibration"])
        return panel

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, rubric: Rubric | None = None) -> Panel:
        """A panel saved by :meth:`save`, or one of the panels in a labeling run's ``panels.json``
        (``{"train": ..., "heldout": ...}``: give ``path#train`` or ``path#heldout``)."""
        path = str(path)
        key = None
        if "#" in path:
            path, key = path.rsplit("#", 1)
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: panel file not found") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if key is not None:
            if key not in data:
                raise KeyError(f"{path}: no panel {key!r}; panels: {', '.join(data)}")
            data = data[key]
        if not isinstance(data, dict) or "labelers" not in data:
            raise ValueError(f"{path}: not a panel (expected an object with 'labelers')")
        return cls.from_dict(data, rubric)


# --------------------------------------------------------------------------- construction


def make_labelers(
    n: int,
    rubric: Rubric,
    *,
    seed: int = 0,
    prefix: str = "labeler",
    noise: float = 0.1,
    weight_jitter: float = 0.35,
    length_jitter: float = 0.4,
    preferred_length: float = 60.0,
    tie_margin: float = 0.02,
    weights: dict | None = None,
    penalties: dict | None = None,
) -> list[Labeler]:
    """``n`` labelers with personal weights, preferred lengths and noise (see the module doc)."""
    if n < 1:
        raise ValueError(f"a panel needs at least one labeler, got {n}")
    base_w = dict(DEFAULT_WEIGHTS, **(weights or {}))
    base_p = dict(DEFAULT_PENALTIES, **(penalties or {}))
    out = []
    for i in range(n):
        lab_id = f"{prefix}-{i}"
        rng = rng_for(seed, "labeler", lab_id)
        w = {k: v * math.exp(weight_jitter * rng.standard_normal()) for k, v in base_w.items()}
        length = preferred_length * math.exp(length_jitter * rng.standard_normal())
        sigma = noise * rng.uniform(0.75, 1.25)
        out.append(
            Labeler(
                lab_id,
                rubric,
                weights=w,
                penalties=dict(base_p),
                preferred_length=length,
                base_noise=sigma,
                tie_margin=tie_margin,
            )
        )
    return out


def make_panels(cfg: Any = None, rubric: Rubric | None = None) -> tuple[Panel, Panel]:
    """The training panel and the held-out panel described by a
    :class:`~instructrl.label.config.PanelConfig` (defaults when None). Both share one rubric;
    their labelers are drawn from different streams, so no held-out labeler is a training one."""
    from instructrl.label.config import PanelConfig

    cfg = cfg or PanelConfig()
    rubric = rubric or build_rubric(cfg.rubric)
    common = dict(
        noise=cfg.noise,
        weight_jitter=cfg.weight_jitter,
        length_jitter=cfg.length_jitter,
        preferred_length=cfg.preferred_length,
        tie_margin=cfg.tie_margin,
        weights=cfg.weights,
        penalties=cfg.penalties,
    )
    train = Panel(make_labelers(cfg.labelers, rubric, seed=cfg.seed, prefix="train", **common), name="train")
    heldout = Panel(
        make_labelers(cfg.heldout_labelers, rubric, seed=cfg.seed, prefix="heldout", **common), name="heldout"
    )
    return train, heldout


def build_rubric(cfg: Any = None) -> Rubric:
    """A :class:`Rubric` from a :class:`~instructrl.label.config.RubricConfig` (defaults when None)."""
    from instructrl.label.config import RubricConfig

    cfg = cfg or RubricConfig()
    return Rubric(
        toxicity=cfg.toxicity,
        toxic_threshold=cfg.toxic_threshold,
        inappropriate_threshold=cfg.inappropriate_threshold,
        on_topic_threshold=cfg.on_topic_threshold,
        repetition_threshold=cfg.repetition_threshold,
    )
