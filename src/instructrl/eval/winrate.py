"""Pure statistics of an evaluation (numpy only).

* **Win rate** of a policy against a baseline: the mean over prompts of the outcome of one
  comparison, ``win = 1``, ``tie = 1/2``, ``loss = 0`` (the paper's "ties counted half").
* **Bootstrap interval**: the percentile bootstrap of the mean. Prompts are resampled with
  replacement ``resamples`` times; the interval is the ``(1 - confidence) / 2`` and
  ``(1 + confidence) / 2`` quantiles (numpy's linear interpolation) of the resampled means. Every
  resample comes from one seeded generator, so the same inputs give the same interval.
* **Preference accuracy** of a scorer (the reward model) on labeled comparisons: of the
  comparisons the labeler did not call a tie, the fraction where the scorer ranks the preferred
  response higher; equal scores count half.
* **Agreement** of two evaluators (the held-out panel and the LLM judge) on the same comparisons:
  the fraction of comparisons where their outcomes are equal, a tie counting as an outcome of its
  own; and, over the comparisons neither called a tie, the fraction where they prefer the same
  response.
* **KL estimate**: ``mean_i [log pi(y_i | x_i) - log pi_ref(y_i | x_i)]`` over responses sampled
  from ``pi``: an unbiased Monte Carlo estimate of ``KL(pi || pi_ref)`` per response, in nats.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

#: The value of each outcome in a win rate.
OUTCOME_VALUE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def outcome_values(outcomes: Sequence) -> np.ndarray:
    """Outcomes (``"win"``/``"tie"``/``"loss"`` or the numbers 1, 0.5, 0) as a float array."""
    out = np.empty(len(outcomes), dtype=np.float64)
    for i, o in enumerate(outcomes):
        if isinstance(o, str):
            if o not in OUTCOME_VALUE:
                raise ValueError(f"outcomes[{i}]: {o!r} is not one of win, tie, loss")
            out[i] = OUTCOME_VALUE[o]
        else:
            v = float(o)
            if v not in (0.0, 0.5, 1.0):
                raise ValueError(f"outcomes[{i}]: {o!r} is not 1 (win), 0.5 (tie) or 0 (loss)")
            out[i] = v
    return out


def win_rate(outcomes: Sequence) -> float:
    """Mean outcome value: wins count 1, ties 1/2, losses 0."""
    values = outcome_values(outcomes)
    if values.size == 0:
        raise ValueError("win rate of no comparisons")
    return float(values.mean())


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (see the module doc)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap of no values")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    for s in range(0, resamples, 1024):  # chunks bound the memory of the index matrix
        n = min(1024, resamples - s)
        means[s : s + n] = x[rng.integers(0, x.size, size=(n, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


@dataclasses.dataclass
class WinRate:
    """A policy's win rate against the baseline with its bootstrap interval and counts."""

    win_rate: float
    low: float
    high: float
    n: int
    wins: int
    ties: int
    losses: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def row(self) -> dict:
        """The figures as a results row names them (``win_rate``, ``win_low``, ``win_high`` and the counts)."""
        return {
            "win_rate": self.win_rate,
            "win_low": self.low,
            "win_high": self.high,
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
        }


def summarize(outcomes: Sequence, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> WinRate:
    """Win rate, bootstrap interval and win/tie/loss counts of a list of outcomes."""
    values = outcome_values(outcomes)
    low, high = bootstrap_ci(values, resamples=resamples, confidence=confidence, seed=seed)
    return WinRate(
        win_rate=float(values.mean()),
        low=low,
        high=high,
        n=int(values.size),
        wins=int((values == 1.0).sum()),
        ties=int((values == 0.5).sum()),
        losses=int((values == 0.0).sum()),
    )


def preference_accuracy(scores_a: Sequence[float], scores_b: Sequence[float], outcomes: Sequence) -> tuple[float, int]:
    """``(accuracy, n)`` of a scorer on comparisons of ``a`` against ``b``: over the outcomes that are
    not ties, 1 where the scorer ranks the labeler's preferred response higher, 1/2 where its scores
    are equal, 0 otherwise; ``n`` is the number of such comparisons (accuracy is nan when 0)."""
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    v = outcome_values(outcomes)
    if not a.size == b.size == v.size:
        raise ValueError(f"scores_a, scores_b and outcomes differ in length: {a.size}, {b.size}, {v.size}")
    decided = v != 0.5
    if not decided.any():
        return float("nan"), 0
    labeler = np.where(v[decided] == 1.0, 1.0, -1.0)
    scorer = np.sign(a[decided] - b[decided])
    credit = np.where(scorer == 0, 0.5, (scorer == labeler).astype(np.float64))
    return float(credit.mean()), int(decided.sum())


def ranking_accuracy(scores: Sequence[Sequence[float]], ranks: Sequence[Sequence[int]]) -> tuple[float, int]:
    """:func:`preference_accuracy` over every response pair of several rankings (rank 1 is best,
    equal ranks tie); ``scores[g][i]`` is the scorer's score of response ``i`` of ranking ``g``."""
    if len(scores) != len(ranks):
        raise ValueError(f"{len(scores)} score lists for {len(ranks)} rankings")
    sa, sb, outs = [], [], []
    for g, (s, r) in enumerate(zip(scores, ranks)):
        if len(s) != len(r):
            raise ValueError(f"ranking {g}: {len(s)} scores for {len(r)} ranks")
        i, j = np.triu_indices(len(r), k=1)
        rr = np.asarray(r)
        ss = np.asarray(s, dtype=np.float64)
        sa += ss[i].tolist()
        sb += ss[j].tolist()
        outs += [1.0 if x < y else 0.0 if x > y else 0.5 for x, y in zip(rr[i], rr[j])]
    return preference_accuracy(sa, sb, outs)


@dataclasses.dataclass
class Agreement:
    """Two evaluators' agreement on ``n`` comparisons (see the module doc): ``rate`` with its bootstrap
    interval [``low``, ``high``]; ``decided`` over the ``n_decided`` comparisons neither called a tie
    (nan when there are none)."""

    rate: float
    low: float
    high: float
    n: int
    decided: float
    n_decided: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def agreement(
    first: Sequence, second: Sequence, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Agreement:
    """:class:`Agreement` of two lists of outcomes of the same comparisons (``"win"``/``"tie"``/``"loss"``
    or 1, 0.5, 0)."""
    a, b = outcome_values(first), outcome_values(second)
    if a.size != b.size:
        raise ValueError(f"{a.size} outcomes against {b.size}")
    if a.size == 0:
        raise ValueError("agreement of no comparisons")
    same = (a == b).astype(np.float64)
    low, high = bootstrap_ci(same, resamples=resamples, confidence=confidence, seed=seed)
    decided = (a != 0.5) & (b != 0.5)
    return Agreement(
        rate=float(same.mean()),
        low=low,
        high=high,
        n=int(a.size),
        decided=float(same[decided].mean()) if decided.any() else float("nan"),
        n_decided=int(decided.sum()),
    )


def kl_estimate(logprobs: Sequence[float], ref_logprobs: Sequence[float]) -> float:
    """Mean of ``logprobs - ref_logprobs`` (per-response log-probabilities of responses sampled from
    the policy, under the policy and under the reference): KL(policy || reference) in nats."""
    lp, rp = np.asarray(logprobs, dtype=np.float64), np.asarray(ref_logprobs, dtype=np.float64)
    if lp.size != rp.size:
        raise ValueError(f"{lp.size} log-probs for {rp.size} reference log-probs")
    if lp.size == 0:
        raise ValueError("KL estimate of no responses")
    return float((lp - rp).mean())
