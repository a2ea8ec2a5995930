"""Agreement among the workbench's labelers, and their throughput: pure functions, plain data in, numbers out.

Pairwise agreement (the statistic InstructGPT reports as 72.6 ± 1.5% among its training labelers)
----------------------------------------------------------------------------------------------------
For every item ranked by two or more labelers, every pair of those labelers and every pair of the
item's outputs: do the two labelers order the two outputs the same way? Each labeler's verdict on
a pair is +1 (the first is better), 0 (tie) or -1. A comparison scores 1 for the same verdict, 0
for opposite verdicts, and **1/2 when exactly one of the two says tie** (two ties agree: 1). This
is the scoring of :func:`instructrl.label.panel.pairwise_agreement`, with which the simulated panel
is calibrated to the paper's 72.6%, so people and simulated labelers are measured alike. The rate
pools every comparison of every item; its interval is a percentile bootstrap over items (an item
brings all its comparisons along, as they are not independent). The *strict* rate beside it leaves
out every comparison in which either labeler tied.

Agreement of one labeler with the consensus scores the same way against the mean rank the *other*
labelers of the item gave each output; with gold, against the ranking an admin marked gold.

Krippendorff's alpha comes from the ``krippendorff`` package: interval for the 1-7 Likert scores
and nominal for each Table 3 flag, over the units (item, output) that two or more labelers scored.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import krippendorff
import numpy as np

from instructrl.label.panel import pair_verdicts
from instructrl.label.workbench.schema import FLAG_NAMES, LIKERT

BOOTSTRAP = 1000  # resamples of the items for the interval of the pairwise rate
LEVEL = 0.95

DEFINITIONS = {
    "pairwise": (
        "For every item ranked by two or more labelers, every pair of those labelers and every pair of the "
        "item's outputs: do the two order the two outputs the same way? Same order (or both tie) scores 1, "
        "opposite orders 0, and a tie against an order 1/2 (ties count half, as the simulated panel is "
        "scored). The rate is the mean over all such comparisons; the interval is a 95% percentile bootstrap "
        "over items. The strict rate leaves out every comparison in which either labeler tied."
    ),
    "alpha": (
        "Krippendorff's alpha over the units (item, output) that two or more labelers scored: interval for "
        "the 1-7 Likert score, nominal for each flag. 1 is perfect agreement, 0 is agreement by chance; "
        "none when there is nothing to compare or every value is the same."
    ),
    "consensus": (
        "A labeler's rankings against the mean rank the other labelers of the same item gave each output, "
        "scored like the pairwise rate (ties count half)."
    ),
    "gold": "A labeler's rankings against the ranking an admin marked gold for the item, scored the same way.",
    "throughput": (
        "Labels per hour: labels submitted (skips included) over the hours from the first task page opened "
        "to the last submit. Seconds per item: from the moment the task page was first opened (its draft) to "
        "the submit; the median over the labeler's labels."
    ),
}


@dataclass(frozen=True)
class RankLabel:
    """One labeler's rate-and-rank label of one item, every list in the imported order of the outputs."""

    item: int
    labeler: str
    ranks: tuple[int, ...]
    likert: tuple[int, ...] = ()
    flags: tuple[Mapping[str, bool], ...] = ()


@dataclass(frozen=True)
class Timing:
    """When one label's task page was first opened (None: unknown) and when it was submitted."""

    labeler: str
    opened_at: datetime | None
    submitted_at: datetime
    skipped: bool = False


@dataclass
class Score:
    """Agreement points and the comparisons they were scored over (``rate`` is None with none)."""

    points: float = 0.0
    comparisons: int = 0

    @property
    def rate(self) -> float | None:
        return self.points / self.comparisons if self.comparisons else None

    def add(self, points: float, comparisons: int) -> None:
        self.points += points
        self.comparisons += comparisons


@dataclass
class Pairwise:
    """The pooled pairwise agreement among overlapping labelers, with its bootstrap interval over items."""

    rate: float | None
    low: float | None
    high: float | None
    se: float | None  # standard deviation of the bootstrap rates
    comparisons: int
    items: int
    labeler_pairs: int  # (item, labeler pair) combinations
    strict_rate: float | None
    strict_comparisons: int
    level: float = LEVEL
    bootstrap: int = BOOTSTRAP
    ties: str = "half"


@dataclass
class Alpha:
    """Krippendorff's alpha of one variable (None when undefined) and the units it was computed over."""

    alpha: float | None
    units: int
    level_of_measurement: str


@dataclass
class Throughput:
    labels: int
    skipped: int
    median_seconds: float | None
    labels_per_hour: float | None


@dataclass
class LabelerRow:
    labeler: str
    consensus: float | None = None
    consensus_comparisons: int = 0
    gold: float | None = None
    gold_comparisons: int = 0
    labels: int = 0
    skipped: int = 0
    median_seconds: float | None = None
    labels_per_hour: float | None = None


@dataclass
class ItemAgreement:
    """One overlapping item: its labelers and their pairwise rate (for the admin to look at the worst)."""

    item: int
    labelers: list[str]
    rate: float
    comparisons: int


@dataclass
class Report:
    pairwise: Pairwise
    likert_alpha: Alpha
    flag_alpha: dict[str, Alpha]
    labelers: list[LabelerRow]
    items: list[ItemAgreement]  # overlapping items, lowest agreement first
    overlapping_items: int
    gold_items: int
    definitions: dict[str, str] = field(default_factory=lambda: dict(DEFINITIONS))

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------ items as arrays


def by_item(labels: Iterable[RankLabel]) -> dict[int, list[RankLabel]]:
    """Labels grouped by item, each group in the order given."""
    groups: dict[int, list[RankLabel]] = defaultdict(list)
    for label in labels:
        groups[label.item].append(label)
    return dict(groups)


@functools.cache
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, k=1)


def verdicts(ranks: np.ndarray) -> np.ndarray:
    """:func:`instructrl.label.panel.pair_verdicts` of every ranking along the last axis at once: +1 where
    output i of a pair (i < j, row-major) is ranked better, 0 for a tie, -1."""
    i, j = _pairs(ranks.shape[-1])
    return np.sign(ranks[..., j] - ranks[..., i])


@dataclass
class Batch:
    """The overlapping items that have ``m`` labels of ``k`` outputs each, as arrays (n items x m labels x k
    outputs); a Likert score or flag that was not given is -1."""

    items: list[int]
    labelers: list[list[str]]
    ranks: np.ndarray  # (n, m, k)
    likert: np.ndarray  # (n, m, k)
    flags: np.ndarray  # (n, m, k, flags)


def _padded(values: Sequence[Any], k: int) -> list[Any]:
    return list(values) + [-1] * (k - len(values)) if len(values) < k else list(values[:k])


def _flag_values(label: RankLabel, k: int, names: Sequence[str]) -> list[list[int]]:
    flags = _padded(label.flags, k)
    return [[-1 if f == -1 or name not in f else int(bool(f[name])) for name in names] for f in flags]


def batches(groups: Mapping[int, Sequence[RankLabel]], names: Sequence[str] = FLAG_NAMES) -> list[Batch]:
    """The items with two or more labels, batched by (labels, outputs) so that every statistic is computed
    over whole arrays (a label whose ranking has another length than its item's first is left out)."""
    shaped: dict[tuple[int, int], list[list[RankLabel]]] = defaultdict(list)
    for group in groups.values():
        k = len(group[0].ranks)
        group = [label for label in group if len(label.ranks) == k]
        if len(group) >= 2 and k >= 2:
            shaped[(len(group), k)].append(group)
    out = []
    for (m, k), items in sorted(shaped.items()):
        out.append(
            Batch(
                items=[group[0].item for group in items],
                labelers=[[label.labeler for label in group] for group in items],
                ranks=np.array([[label.ranks for label in group] for group in items], dtype=np.int64),
                likert=np.array([[_padded(label.likert, k) for label in group] for group in items], dtype=np.int64),
                flags=np.array(
                    [[_flag_values(label, k, names) for label in group] for group in items], dtype=np.int8
                ).reshape(len(items), m, k, len(names)),
            )
        )
    return out


# ------------------------------------------------------------------------------------ pairwise


def compare(verdicts_a: np.ndarray, verdicts_b: np.ndarray) -> tuple[float, int, int, int]:
    """Two labelers' verdicts on the same output pairs: (points with ties counting half, comparisons,
    strict agreements, strict comparisons), strict meaning that neither tied."""
    points = float(np.sum(1.0 - np.abs(verdicts_a - verdicts_b) / 2.0))
    strict = (verdicts_a != 0) & (verdicts_b != 0)
    return points, int(verdicts_a.size), int(np.sum(strict & (verdicts_a == verdicts_b))), int(np.sum(strict))


@dataclass
class ItemScore:
    """One overlapping item's comparisons over every pair of its labelers."""

    item: int
    labelers: list[str]
    points: float  # ties count half
    comparisons: int
    strict_agreements: int
    strict_comparisons: int
    labeler_pairs: int


def item_table(batched: Sequence[Batch]) -> list[ItemScore]:
    rows = []
    for batch in batched:
        v = verdicts(batch.ranks)  # (n, m, pairs of outputs)
        a, b = _pairs(batch.ranks.shape[1])  # pairs of labelers
        va, vb = v[:, a], v[:, b]
        points = (1.0 - np.abs(va - vb) / 2.0).sum(axis=(1, 2))
        strict = (va != 0) & (vb != 0)
        strict_agree = (strict & (va == vb)).sum(axis=(1, 2))
        strict_n = strict.sum(axis=(1, 2))
        per_item = a.size * v.shape[2]
        for row, item in enumerate(batch.items):
            rows.append(
                ItemScore(
                    item,
                    batch.labelers[row],
                    float(points[row]),
                    per_item,
                    int(strict_agree[row]),
                    int(strict_n[row]),
                    int(a.size),
                )
            )
    return rows


def bootstrap_ratio(
    points: Sequence[float], counts: Sequence[int], n_boot: int = BOOTSTRAP, seed: int = 0, level: float = LEVEL
) -> tuple[float, float, float]:
    """Percentile interval (low, high) and standard deviation of ``sum(points) / sum(counts)`` when the
    units (items) are drawn again with replacement, ``n_boot`` times (seeded)."""
    p, c = np.asarray(points, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    rng = np.random.default_rng(seed)
    rates = np.empty(n_boot)
    # a block of resamples at a time, so that many items do not need one n_boot x items array
    block = max(1, min(n_boot, 4_000_000 // max(1, p.size)))
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        draws = rng.integers(0, p.size, size=(size, p.size))
        rates[start : start + size] = p[draws].sum(axis=1) / c[draws].sum(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(rates, [tail, 1.0 - tail])
    return float(low), float(high), float(rates.std(ddof=1)) if n_boot > 1 else 0.0


def pairwise(table: Sequence[ItemScore], n_boot: int = BOOTSTRAP, seed: int = 0) -> Pairwise:
    """The pooled pairwise agreement over the overlapping items, with its bootstrap interval over items."""
    table = [row for row in table if row.comparisons > 0]
    if not table:
        return Pairwise(None, None, None, None, 0, 0, 0, None, 0, bootstrap=n_boot)
    points = [row.points for row in table]
    counts = [row.comparisons for row in table]
    strict_agree = sum(row.strict_agreements for row in table)
    strict_n = sum(row.strict_comparisons for row in table)
    low, high, se = bootstrap_ratio(points, counts, n_boot, seed)
    return Pairwise(
        rate=sum(points) / sum(counts),
        low=low,
        high=high,
        se=se,
        comparisons=sum(counts),
        items=len(table),
        labeler_pairs=sum(row.labeler_pairs for row in table),
        strict_rate=strict_agree / strict_n if strict_n else None,
        strict_comparisons=strict_n,
        bootstrap=n_boot,
    )


def worst_items(table: Sequence[ItemScore], limit: int = 50) -> list[ItemAgreement]:
    """The overlapping items with the lowest pairwise agreement (ties by item id)."""
    rows = [ItemAgreement(r.item, r.labelers, r.points / r.comparisons, r.comparisons) for r in table if r.comparisons]
    rows.sort(key=lambda row: (row.rate, row.item))
    return rows[:limit]


# ------------------------------------------------------------------------------------ per labeler


def consensus_agreement(batched: Sequence[Batch]) -> dict[str, Score]:
    """Each labeler's agreement with the mean rank the other labelers of the same items gave."""
    scores: dict[str, Score] = defaultdict(Score)
    for batch in batched:
        # the others' rank sums order the outputs as their mean ranks do, without fractions
        others = batch.ranks.sum(axis=1, keepdims=True) - batch.ranks
        points = (1.0 - np.abs(verdicts(batch.ranks) - verdicts(others)) / 2.0).sum(axis=2)  # (n, m)
        per_label = len(_pairs(batch.ranks.shape[2])[0])
        for row, names in enumerate(batch.labelers):
            for column, name in enumerate(names):
                scores[name].add(float(points[row, column]), per_label)
    return dict(scores)


def gold_agreement(labels: Iterable[RankLabel], gold: Mapping[int, Sequence[int]]) -> dict[str, Score]:
    """Each labeler's agreement with the gold rankings of the items they ranked."""
    scores: dict[str, Score] = defaultdict(Score)
    for label in labels:
        if label.item in gold and len(gold[label.item]) == len(label.ranks):
            points, comparisons, _, _ = compare(pair_verdicts(label.ranks), pair_verdicts(gold[label.item]))
            scores[label.labeler].add(points, comparisons)
    return dict(scores)


# ------------------------------------------------------------------------------------ alpha


def alpha_from_counts(counts: np.ndarray, domain: Sequence[int], level: str) -> float | None:
    """Krippendorff's alpha of units given as value counts (units x values); None when undefined (fewer
    than two values in any unit, or one value everywhere so that chance disagreement is zero)."""
    pairable = counts[counts.sum(axis=1) >= 2]
    if pairable.shape[0] == 0 or np.count_nonzero(pairable.sum(axis=0)) < 2:
        return None
    value = float(krippendorff.alpha(value_counts=pairable, value_domain=list(domain), level_of_measurement=level))
    return None if math.isnan(value) else value


def _value_counts(values: Sequence[np.ndarray], domain: Sequence[int]) -> np.ndarray:
    """Units x values counts from arrays of shape (n items, m labels, k outputs): a unit is (item, output)."""
    rows = [np.stack([(v == value).sum(axis=1) for value in domain], axis=-1).reshape(-1, len(domain)) for v in values]
    return np.concatenate(rows) if rows else np.zeros((0, len(domain)), dtype=np.int64)


def _alpha(counts: np.ndarray, domain: Sequence[int], level: str) -> Alpha:
    return Alpha(alpha_from_counts(counts, domain, level), int((counts.sum(axis=1) >= 2).sum()), level)


def likert_alpha(batched: Sequence[Batch]) -> Alpha:
    domain = list(LIKERT)
    return _alpha(_value_counts([b.likert for b in batched], domain), domain, "interval")


def flag_alphas(batched: Sequence[Batch], names: Sequence[str] = FLAG_NAMES) -> dict[str, Alpha]:
    """Nominal alpha of each flag (``names`` must be the flags the batches were built with, in order)."""
    return {
        name: _alpha(_value_counts([b.flags[..., f] for b in batched], [0, 1]), [0, 1], "nominal")
        for f, name in enumerate(names)
    }


# ------------------------------------------------------------------------------------ throughput


def throughput(timings: Iterable[Timing]) -> dict[str, Throughput]:
    """Per labeler: labels, skips, the median seconds from page open to submit, and labels per hour
    over the span from the first page opened to the last submit (None for a span of zero)."""
    per: dict[str, list[Timing]] = defaultdict(list)
    for timing in timings:
        per[timing.labeler].append(timing)
    out = {}
    for labeler, rows in per.items():
        seconds = [(t.submitted_at - t.opened_at).total_seconds() for t in rows if t.opened_at is not None]
        start = min((t.opened_at or t.submitted_at) for t in rows)
        span = (max(t.submitted_at for t in rows) - start).total_seconds()
        out[labeler] = Throughput(
            labels=len(rows),
            skipped=sum(t.skipped for t in rows),
            median_seconds=statistics.median(seconds) if seconds else None,
            labels_per_hour=len(rows) * 3600.0 / span if span > 0 else None,
        )
    return out


# ------------------------------------------------------------------------------------ the report


def report(
    labels: Iterable[RankLabel],
    gold: Mapping[int, Sequence[int]] | None = None,
    timings: Iterable[Timing] = (),
    n_boot: int = BOOTSTRAP,
    seed: int = 0,
    worst: int = 50,
) -> Report:
    """Everything the agreement dashboard shows. ``labels`` need only hold the items with two or more
    labels and the gold items (other labels change nothing but throughput, which ``timings`` gives)."""
    labels = list(labels)
    gold = dict(gold or {})
    groups = by_item(labels)
    batched = batches(groups)
    table = item_table(batched)
    consensus = consensus_agreement(batched)
    with_gold = gold_agreement(labels, gold)
    speed = throughput(timings)
    rows = []
    for name in sorted(set(consensus) | set(with_gold) | set(speed)):
        row = LabelerRow(name)
        if name in consensus:
            row.consensus, row.consensus_comparisons = consensus[name].rate, consensus[name].comparisons
        if name in with_gold:
            row.gold, row.gold_comparisons = with_gold[name].rate, with_gold[name].comparisons
        if name in speed:
            s = speed[name]
            row.labels, row.skipped, row.median_seconds, row.labels_per_hour = (
                s.labels,
                s.skipped,
                s.median_seconds,
                s.labels_per_hour,
            )
        rows.append(row)
    return Report(
        pairwise=pairwise(table, n_boot, seed),
        likert_alpha=likert_alpha(batched),
        flag_alpha=flag_alphas(batched),
        labelers=rows,
        items=worst_items(table, worst),
        overlapping_items=len(table),
        gold_items=len(gold),
    )
