"""The agreement dashboard's numbers (label/workbench/agreement.py), each against a hand computation."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest

from instructrl.label.panel import pair_verdicts, pairwise_agreement
from instructrl.label.workbench.agreement import (
    RankLabel,
    Timing,
    alpha_from_counts,
    batches,
    bootstrap_ratio,
    by_item,
    consensus_agreement,
    flag_alphas,
    gold_agreement,
    item_table,
    likert_alpha,
    pairwise,
    report,
    throughput,
    verdicts,
    worst_items,
)
from instructrl.label.workbench.schema import FLAG_NAMES

# item 1: three labelers; output pairs (0,1) (0,2) (1,2)
#   a [1,2,3] -> verdicts +1 +1 +1
#   b [1,3,2] -> verdicts +1 +1 -1
#   c [1,1,2] -> verdicts  0 +1 +1
# a-b: 1 + 1 + 0 = 2      strict 2 of 3
# a-c: 1/2 + 1 + 1 = 2.5  strict 2 of 2
# b-c: 1/2 + 1 + 0 = 1.5  strict 1 of 2
# item 2: x [1,2] and y [2,1] disagree on their one pair; item 3 has one labeler (no overlap)
LABELS = [
    RankLabel(1, "a", (1, 2, 3)),
    RankLabel(1, "b", (1, 3, 2)),
    RankLabel(1, "c", (1, 1, 2)),
    RankLabel(2, "x", (1, 2)),
    RankLabel(2, "y", (2, 1)),
    RankLabel(3, "z", (1, 2)),
]


def _table(labels):
    return item_table(batches(by_item(labels)))


def test_verdicts_are_the_panels_pair_verdicts_at_once():
    ranks = np.array([[[1, 2, 3, 3], [2, 1, 4, 3]], [[4, 4, 1, 2], [1, 1, 1, 1]]])
    out = verdicts(ranks)
    assert out.shape == (2, 2, 6)
    for n in range(2):
        for m in range(2):
            assert out[n, m].tolist() == pair_verdicts(ranks[n, m].tolist()).tolist()
    assert out[0, 0].tolist() == [1, 1, 1, 1, 1, 0]  # (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)


def test_batches_group_items_by_shape_and_leave_out_single_labels():
    groups = by_item(LABELS)
    shapes = [(b.items, b.ranks.shape, b.labelers) for b in batches(groups)]
    assert shapes == [([2], (1, 2, 2), [["x", "y"]]), ([1], (1, 3, 3), [["a", "b", "c"]])]


def test_pairwise_rate_ties_count_half_and_strict_leaves_them_out():
    result = pairwise(_table(LABELS), n_boot=2000, seed=3)
    assert result.rate == pytest.approx(6.0 / 10)  # (2 + 2.5 + 1.5 + 0) / (9 + 1)
    assert result.strict_rate == pytest.approx(5 / 8)  # (2 + 2 + 1 + 0) / (3 + 2 + 2 + 1)
    assert (result.comparisons, result.items, result.labeler_pairs, result.strict_comparisons) == (10, 2, 4, 8)
    assert result.ties == "half"
    # the same scoring as the simulated panel's
    panel = sum(pairwise_agreement(p, q)[0] for p, q in [((1, 2, 3), (1, 3, 2)), ((1, 2, 3), (1, 1, 2))])
    panel += pairwise_agreement((1, 3, 2), (1, 1, 2))[0] + pairwise_agreement((1, 2), (2, 1))[0]
    assert panel == pytest.approx(6.0)
    # resampling the two items gives 12/18 (item 1 twice, p = 1/4), 6/10 (p = 1/2) or 0/2 (p = 1/4):
    # the 2.5% quantile is 0 and the 97.5% quantile 2/3
    assert result.low == 0.0 and result.high == pytest.approx(2 / 3)
    assert 0.2 < result.se < 0.35  # sd of {2/3: 1/4, 3/5: 1/2, 0: 1/4} is 0.271


def test_pairwise_without_overlap_is_empty():
    result = pairwise(_table([RankLabel(1, "a", (1, 2)), RankLabel(2, "b", (2, 1))]))
    assert (result.rate, result.low, result.comparisons, result.items) == (None, None, 0, 0)


def test_bootstrap_ratio_of_one_item_is_that_item():
    low, high, se = bootstrap_ratio([3.0], [4], n_boot=50, seed=0)
    assert (low, high, se) == (0.75, 0.75, 0.0)
    # seeded: the same draws give the same interval
    assert bootstrap_ratio([1.0, 0.0, 2.0], [2, 2, 2], seed=7) == bootstrap_ratio([1.0, 0.0, 2.0], [2, 2, 2], seed=7)


def test_worst_items_lowest_first():
    rows = worst_items(_table(LABELS))
    assert [(r.item, r.labelers, r.rate, r.comparisons) for r in rows] == [
        (2, ["x", "y"], 0.0, 1),
        (1, ["a", "b", "c"], pytest.approx(6 / 9), 9),
    ]


def test_consensus_is_the_mean_rank_of_the_others():
    scores = consensus_agreement(batches(by_item(LABELS)))
    # a against the mean of b and c, [1, 2, 2]: verdicts +1 +1 0 -> 1 + 1 + 1/2
    # b against the mean of a and c, [1, 1.5, 2.5]: +1 +1 +1 -> 1 + 1 + 0
    # c against the mean of a and b, [1, 2.5, 2.5]: +1 +1 0 -> 1/2 + 1 + 1/2
    assert {name: (s.points, s.comparisons) for name, s in scores.items()} == {
        "a": (2.5, 3),
        "b": (2.0, 3),
        "c": (2.0, 3),
        "x": (0.0, 1),
        "y": (0.0, 1),
    }
    assert scores["a"].rate == pytest.approx(2.5 / 3)


def test_gold_agreement_counts_single_labeled_gold_items():
    gold = {1: [1, 2, 3], 3: [2, 1], 9: [1, 2]}
    scores = gold_agreement(LABELS, gold)
    assert {name: (s.points, s.comparisons) for name, s in scores.items()} == {
        "a": (3.0, 3),
        "b": (2.0, 3),
        "c": (2.5, 3),
        "z": (0.0, 1),
    }


def test_likert_alpha_interval_hand_computed():
    # units (item 5, output 0): 1, 1 and (item 5, output 1): 2, 3; item 6 has one label and adds nothing.
    # D_o = 2 / 4 (unit 2 holds the ordered pairs (2,3), (3,2), each squared difference 1, over m_u - 1 = 1).
    # D_e over the pooled values 1, 1, 2, 3: ordered pairs' squared differences sum to 22, over 4 * 3.
    # alpha = 1 - (2/4) / (22/12) = 16/22
    groups = by_item(
        [
            RankLabel(5, "p", (1, 2), likert=(1, 2)),
            RankLabel(5, "q", (1, 2), likert=(1, 3)),
            RankLabel(6, "p", (1, 2), (7, 7)),
        ]
    )
    result = likert_alpha(batches(groups))
    assert result.alpha == pytest.approx(16 / 22)
    assert (result.units, result.level_of_measurement) == (2, "interval")


def test_flag_alphas_nominal_hand_computed():
    no = dict.fromkeys(FLAG_NAMES, False)
    p0, p1 = {**no, "sexual_content": True}, {**no, "hallucination": True}
    q0, q1 = {**no, "sexual_content": True}, dict(no)
    groups = by_item([RankLabel(5, "p", (1, 2), (4, 4), (p0, p1)), RankLabel(5, "q", (1, 2), (4, 4), (q0, q1))])
    alphas = flag_alphas(batches(groups))
    # sexual content: yes/yes, no/no -> 1
    assert alphas["sexual_content"].alpha == pytest.approx(1.0)
    # hallucination: no/no, yes/no -> values 0,0,0,1: D_o = 2/4, D_e = (3*1*2)/(4*3) = 1/2 -> alpha 0
    assert alphas["hallucination"].alpha == pytest.approx(0.0)
    # a flag nobody set has no chance disagreement: alpha is undefined
    assert alphas["violent_content"].alpha is None and alphas["violent_content"].units == 2
    assert set(alphas) == set(FLAG_NAMES)


def test_alpha_from_counts_undefined_cases():
    assert alpha_from_counts(np.zeros((0, 7), dtype=np.int64), range(1, 8), "interval") is None
    assert alpha_from_counts(np.array([[1, 0], [0, 1]]), [0, 1], "nominal") is None  # no unit has two values
    assert alpha_from_counts(np.array([[2, 0], [0, 2]]), [0, 1], "nominal") == pytest.approx(1.0)


def test_throughput_hand_computed():
    t0 = datetime(2026, 12, 1, 10, 0, 0)
    timings = [
        Timing("a", t0, t0 + timedelta(seconds=30)),
        Timing("a", t0 + timedelta(minutes=1), t0 + timedelta(minutes=2)),
        Timing("a", None, t0 + timedelta(minutes=5), skipped=True),
        Timing("b", t0, t0),
    ]
    out = throughput(timings)
    assert (out["a"].labels, out["a"].skipped, out["a"].median_seconds) == (3, 1, 45.0)  # median of 30 s, 60 s
    assert out["a"].labels_per_hour == pytest.approx(3 * 3600 / 300)  # 3 labels from 10:00 to 10:05
    assert (out["b"].labels, out["b"].median_seconds, out["b"].labels_per_hour) == (1, 0.0, None)


def test_report_collects_every_labeler_and_is_json():
    t0 = datetime(2026, 12, 1, 10, 0, 0)
    result = report(LABELS, gold={1: [1, 2, 3]}, timings=[Timing("w", t0, t0 + timedelta(seconds=10))], n_boot=100)
    assert [row.labeler for row in result.labelers] == ["a", "b", "c", "w", "x", "y"]
    row_a = result.labelers[0]
    assert (row_a.consensus, row_a.gold, row_a.gold_comparisons) == (pytest.approx(2.5 / 3), 1.0, 3)
    assert result.labelers[3].labels == 1 and result.labelers[3].consensus is None
    assert (result.overlapping_items, result.gold_items) == (2, 1)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["pairwise"]["rate"] == pytest.approx(0.6)
    assert "ties count half" in data["definitions"]["pairwise"]
