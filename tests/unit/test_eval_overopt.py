"""Best-of-n KL and the exact best-of-n expectation, against hand computation and brute force."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from instructrl.eval.overopt import best_of_n_curve, best_of_n_expectation, best_of_n_kl


def test_best_of_n_kl_formula():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)  # 0.19315 nats
    assert best_of_n_kl(4) == pytest.approx(1.386294361 - 0.75, abs=1e-9)
    assert best_of_n_kl(16) == pytest.approx(math.log(16) - 15 / 16)
    with pytest.raises(ValueError):
        best_of_n_kl(0)


def test_best_of_n_kl_matches_the_exact_kl_of_picking_the_best():
    # N equally likely distinct outcomes; best-of-n picks the k-th lowest (k = 1..N) with probability
    # (k^n - (k-1)^n) / N^n. Its KL to the uniform base tends to log n - (n-1)/n as N grows.
    size, n = 20000, 4
    kl = 0.0
    for k in range(1, size + 1):
        q = (k**n - (k - 1) ** n) / size**n
        if q > 0:
            kl += q * math.log(q * size)
    assert kl == pytest.approx(best_of_n_kl(n), abs=1e-3)


def test_best_of_n_expectation_hand_computed():
    proxy, gold = [0.1, 0.9, 0.5], [1.0, 0.0, 0.5]
    # n = 1: the mean; n = 3: the proxy's argmax (sample 1); n = 2: subsets {0,1}->1, {0,2}->2, {1,2}->1
    assert best_of_n_expectation(proxy, gold, 1) == pytest.approx((0.5, 0.5))
    assert best_of_n_expectation(proxy, gold, 3) == pytest.approx((0.9, 0.0))
    assert best_of_n_expectation(proxy, gold, 2) == pytest.approx(((0.9 + 0.5 + 0.9) / 3, (0.0 + 0.5 + 0.0) / 3))


def test_best_of_n_expectation_equals_brute_force_over_subsets():
    rng = random.Random(0)
    proxy = [rng.random() for _ in range(9)]
    gold = [rng.random() for _ in range(9)]
    for n in range(1, 10):
        subsets = list(itertools.combinations(range(9), n))
        picks = [max(s, key=lambda k: proxy[k]) for s in subsets]
        want = (sum(proxy[k] for k in picks) / len(picks), sum(gold[k] for k in picks) / len(picks))
        assert best_of_n_expectation(proxy, gold, n) == pytest.approx(want, abs=1e-12)


def test_curve_averages_prompts():
    rows = best_of_n_curve([[0.0, 1.0], [1.0, 0.0]], [[0.2, 0.4], [0.6, 0.8]], [1, 2])
    assert rows[0]["kl"] == 0.0 and rows[0]["gold"] == pytest.approx((0.3 + 0.7) / 2)
    assert rows[1]["gold"] == pytest.approx((0.4 + 0.6) / 2) and rows[1]["proxy"] == pytest.approx(1.0)
    assert rows[1]["sqrt_kl"] == pytest.approx(math.sqrt(math.log(2) - 0.5))
