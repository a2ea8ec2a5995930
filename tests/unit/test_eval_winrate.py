"""Win rate, bootstrap interval, preference accuracy and KL estimate against hand-computed values."""

import itertools
import math

import numpy as np
import pytest

from instructrl.eval.winrate import (
    bootstrap_ci,
    kl_estimate,
    outcome_values,
    preference_accuracy,
    ranking_accuracy,
    summarize,
    win_rate,
)


def test_win_rate_counts_ties_half():
    assert win_rate(["win", "tie", "loss", "win"]) == pytest.approx(2.5 / 4)
    assert win_rate([1, 0.5, 0.5]) == pytest.approx(2.0 / 3)
    assert win_rate(["loss", "loss"]) == 0.0


def test_bad_outcomes_are_named():
    with pytest.raises(ValueError, match=r"outcomes\[1\]: 'draw'"):
        outcome_values(["win", "draw"])
    with pytest.raises(ValueError, match=r"outcomes\[0\]: 0.7"):
        outcome_values([0.7])
    with pytest.raises(ValueError, match="no comparisons"):
        win_rate([])


def test_bootstrap_of_a_constant_is_a_point():
    assert bootstrap_ci([0.5] * 7, resamples=200) == (0.5, 0.5)
    assert bootstrap_ci([1.0], resamples=50) == (1.0, 1.0)


def test_bootstrap_of_one_win_and_one_loss_spans_everything():
    # resampled means: 0 (p 1/4), 1/2 (p 1/2), 1 (p 1/4): the 2.5% and 97.5% quantiles are 0 and 1
    assert bootstrap_ci([1.0, 0.0], resamples=4000, seed=3) == (0.0, 1.0)


def test_bootstrap_agrees_with_exact_enumeration():
    # all 4^4 resamples of four outcomes, equally likely: the exact distribution of the mean
    x = np.array([1.0, 0.5, 0.0, 1.0])
    means = np.array([x[list(t)].mean() for t in itertools.product(range(4), repeat=4)])
    values, counts = np.unique(means, return_counts=True)
    cdf = np.cumsum(counts) / counts.sum()
    exact_low = values[np.searchsorted(cdf, 0.025)]  # smallest mean whose CDF reaches 2.5%
    exact_high = values[np.searchsorted(cdf, 0.975)]
    # by hand: P(mean <= 1/8) = 5/256 < 2.5% < P(mean <= 1/4) = 19/256; P(mean < 1) = 240/256 < 97.5%
    assert (exact_low, exact_high) == (0.25, 1.0)
    assert bootstrap_ci(x, resamples=20000, seed=1) == (exact_low, exact_high)


def test_bootstrap_is_seeded_and_checks_arguments():
    x = [1, 0, 0.5, 1, 1, 0, 0.5, 1, 0, 1]
    assert bootstrap_ci(x, seed=5) == bootstrap_ci(x, seed=5)
    low, high = bootstrap_ci(x, resamples=5000, seed=0)
    assert low < np.mean(x) < high
    # a 95% interval of a mean of 10 values with sd ~0.43: about +-1.96 * 0.43 / sqrt(10) = +-0.27
    assert high - low == pytest.approx(2 * 1.96 * np.std(x) / math.sqrt(len(x)), abs=0.08)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(x, confidence=1.0)
    with pytest.raises(ValueError, match="no values"):
        bootstrap_ci([])


def test_summarize_counts_and_interval():
    s = summarize(["win", "win", "tie", "loss", "win"], resamples=3000, seed=0)
    assert (s.n, s.wins, s.ties, s.losses) == (5, 3, 1, 1)
    assert s.win_rate == pytest.approx(3.5 / 5)
    assert s.low <= s.win_rate <= s.high
    assert (s.low, s.high) == bootstrap_ci([1, 1, 0.5, 0, 1], resamples=3000, seed=0)


def test_preference_accuracy_skips_ties_and_halves_equal_scores():
    # decided: (2 > 1, win) right; (1 < 2, win) wrong; (3 = 3, loss) half; the tie is skipped
    acc, n = preference_accuracy([2, 1, 3, 0], [1, 2, 3, 5], ["win", "win", "loss", "tie"])
    assert (acc, n) == (pytest.approx(1.5 / 3), 3)
    acc, n = preference_accuracy([0.1], [0.3], ["loss"])
    assert (acc, n) == (1.0, 1)
    acc, n = preference_accuracy([1.0], [2.0], ["tie"])
    assert math.isnan(acc) and n == 0


def test_ranking_accuracy_over_all_pairs():
    # ranks [1, 2, 2]: pairs (0,1) and (0,2) prefer response 0, (1,2) is a tie and skipped
    assert ranking_accuracy([[3.0, 2.0, 1.0]], [[1, 2, 2]]) == (1.0, 2)
    # two rankings: the second one's scorer is backwards on its single pair
    acc, n = ranking_accuracy([[3.0, 2.0, 1.0], [0.0, 1.0]], [[1, 2, 3], [1, 2]])
    assert (acc, n) == (pytest.approx(3 / 4), 4)
    with pytest.raises(ValueError, match="ranking 0: 2 scores for 3 ranks"):
        ranking_accuracy([[1.0, 2.0]], [[1, 2, 3]])


def test_kl_estimate_is_the_mean_log_ratio():
    assert kl_estimate([-1.0, -2.0], [-1.5, -1.0]) == pytest.approx((0.5 - 1.0) / 2)
    assert kl_estimate([-3.0, -4.0], [-3.0, -4.0]) == 0.0
    with pytest.raises(ValueError, match="2 log-probs for 1"):
        kl_estimate([-1.0, -2.0], [-1.0])
