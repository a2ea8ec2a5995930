"""The automatic evaluations' scoring functions against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from instructrl.eval.metrics import (
    answer_after_phrase,
    bootstrap_statistic,
    byte_length,
    char_length,
    cot_solution,
    expected_max_toxicity,
    last_number,
    mc1,
    mc2,
    mean_interval,
    multiple_choice,
    normalize_number,
    ranks,
    reference_answer,
    spearman,
    toxicity_bin,
    toxicity_probability,
    uniform_bin_sample,
)
from instructrl.eval.winrate import bootstrap_ci

# --------------------------------------------------------------------------- TruthfulQA


def test_mc1_is_one_only_when_the_correct_choice_is_strictly_highest():
    assert mc1([-1.0, -2.0, -3.0], 0) == 1.0
    assert mc1([-1.0, -2.0, -3.0], 1) == 0.0
    assert mc1([-2.5, -1.0, -3.0], 1) == 1.0
    assert mc1([-1.0, -1.0, -3.0], 0) == 0.0  # a tie with a false answer counts as wrong (original MC_calcs)
    with pytest.raises(ValueError, match="outside"):
        mc1([-1.0, -2.0], 2)
    with pytest.raises(ValueError, match="finite"):
        mc1([-1.0, float("-inf")], 0)


def test_mc2_is_the_normalized_mass_of_the_true_answers():
    # probabilities 0.2, 0.3 (true) and 0.5 (false): the true mass is 0.5
    assert mc2([math.log(0.2), math.log(0.3), math.log(0.5)], [1, 1, 0]) == pytest.approx(0.5, abs=1e-12)
    # the labels decide, not the order (a false answer listed first)
    assert mc2([math.log(0.5), math.log(0.2), math.log(0.3)], [0, 1, 1]) == pytest.approx(0.5, abs=1e-12)
    # unnormalized probabilities 0.1 (true), 0.3 (false): 0.1 / 0.4
    assert mc2([math.log(0.1), math.log(0.3)], [True, False]) == pytest.approx(0.25, abs=1e-12)


def test_mc2_does_not_underflow_for_long_answers():
    # exp(-2000) is 0.0 in float64; the ratio is still 1 / (1 + e^-1 + e^-3)
    assert math.exp(-2000.0) == 0.0
    got = mc2([-2000.0, -2001.0, -2003.0], [1, 0, 0])
    assert got == pytest.approx(1.0 / (1.0 + math.exp(-1.0) + math.exp(-3.0)), rel=1e-12)
    assert got == pytest.approx(0.7053845126982412, rel=1e-12)


def test_mc2_needs_both_kinds_of_answers():
    with pytest.raises(ValueError, match="true and one false"):
        mc2([-1.0, -2.0], [1, 1])
    with pytest.raises(ValueError, match="labels"):
        mc2([-1.0, -2.0], [1, 0, 0])


# --------------------------------------------------------------------------- acc, acc_norm, mean per token


def test_three_multiple_choice_scorers_pick_different_choices():
    # lls -10, -12, -9; lengths 5, 12, 2 characters; 5, 3, 1 tokens
    #   acc:            argmax(-10, -12, -9)              -> 2
    #   acc_norm:       argmax(-2, -1, -4.5)              -> 1
    #   acc_mean_token: argmax(-2, -4, -9)                -> 0
    choices = ["abcde", "abcdefghijkl", "ab"]
    assert multiple_choice([-10.0, -12.0, -9.0], 2, choices, [5, 3, 1]) == {
        "acc": 1.0,
        "acc_norm": 0.0,
        "acc_bytes": 0.0,
        "acc_mean_token": 0.0,
    }
    assert multiple_choice([-10.0, -12.0, -9.0], 1, choices, [5, 3, 1])["acc_norm"] == 1.0
    assert multiple_choice([-10.0, -12.0, -9.0], 0, choices, [5, 3, 1])["acc_mean_token"] == 1.0


def test_acc_norm_counts_characters_and_acc_bytes_utf8_bytes():
    # "éééé": 4 characters, 8 bytes; "abcdef": 6 and 6
    assert (char_length("éééé"), byte_length("éééé")) == (4, 8)
    # per character -1.0 vs -0.9 picks choice 1; per byte -0.5 vs -0.9 picks choice 0
    got = multiple_choice([-4.0, -5.4], 0, ["éééé", "abcdef"], [2, 2])
    assert got["acc"] == 1.0 and got["acc_norm"] == 0.0 and got["acc_bytes"] == 1.0


def test_ties_go_to_the_first_choice_as_in_lm_eval():
    assert multiple_choice([-3.0, -3.0], 0, ["ab", "cd"], [1, 1])["acc"] == 1.0
    assert multiple_choice([-3.0, -3.0], 1, ["ab", "cd"], [1, 1])["acc"] == 0.0


# --------------------------------------------------------------------------- toxicity


def test_toxicity_bins():
    assert [toxicity_bin(s, 10) for s in (0.0, 0.05, 0.1, 0.55, 0.999, 1.0)] == [0, 0, 1, 5, 9, 9]
    with pytest.raises(ValueError, match="outside"):
        toxicity_bin(1.2, 10)


def test_uniform_bin_sample_spreads_over_bins_and_redistributes_shortfalls():
    scores = [0.1, 0.2, 0.3, 0.6, 0.9, None, 0.05, 0.45]  # bin 0 (< 0.5): 0, 1, 2, 6, 7; bin 1: 3, 4
    four = uniform_bin_sample(scores, 4, bins=2, seed=0)
    assert len(four) == 4 and {3, 4} <= set(four) and 5 not in four
    assert sum(scores[i] < 0.5 for i in four) == 2
    # bin 1 has only two: its third goes to bin 0
    six = uniform_bin_sample(scores, 6, bins=2, seed=0)
    assert len(six) == 6 and {3, 4} <= set(six) and sum(scores[i] < 0.5 for i in six) == 4
    # more than there are: every scored item, never an unscored one
    assert uniform_bin_sample(scores, 100, bins=2, seed=0) == [0, 1, 2, 3, 4, 6, 7]
    # an odd n: the first bins take one more
    three = uniform_bin_sample(scores, 3, bins=2, seed=0)
    assert sum(scores[i] < 0.5 for i in three) == 2
    assert uniform_bin_sample(scores, 4, bins=2, seed=0) == four  # the same seed, the same draw
    assert four == sorted(four)


def test_uniform_bin_sample_is_uniform_on_real_like_data():
    rng = np.random.default_rng(0)
    scores = list(rng.beta(0.5, 3.0, size=5000))  # most prompts are not toxic, as in RealToxicityPrompts
    picked = uniform_bin_sample(scores, 200, bins=10, seed=1)
    counts = np.bincount([toxicity_bin(scores[i], 10) for i in picked], minlength=10)
    have = np.bincount([toxicity_bin(s, 10) for s in scores], minlength=10)
    assert len(picked) == 200 and len(set(picked)) == 200
    short = have < 20
    assert short.any() and not short.all()  # the top bins hold few prompts: their shortfall moves down
    assert (counts[short] == have[short]).all()  # a bin with fewer than its 20 gives all it has
    full = counts[~short]  # the others share the rest evenly (round-robin: at most one apart)
    assert full.min() >= 20 and full.max() - full.min() <= 1


def test_expected_max_toxicity_and_toxicity_probability():
    samples = [[0.1, 0.7, 0.2], [0.2, 0.3, 0.05], [0.5, 0.0, 0.0]]
    assert expected_max_toxicity(samples) == [0.7, 0.3, 0.5]
    assert np.mean(expected_max_toxicity(samples)) == pytest.approx(0.5)
    assert toxicity_probability(samples) == [1.0, 0.0, 1.0]  # 0.5 itself counts as toxic
    assert toxicity_probability(samples, threshold=0.75) == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="at least one sample"):
        expected_max_toxicity([[0.1], []])


def test_spearman_by_hand():
    assert list(ranks([10, 20, 20, 5, 30])) == [2.0, 3.5, 3.5, 1.0, 5.0]
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    # ties: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [10, 20, 30, 40]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


# --------------------------------------------------------------------------- GSM8K


def test_gsm8k_reference_answers():
    assert reference_answer("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n#### 18") == "18"
    assert reference_answer("...\n#### 1,234") == "1234"
    assert reference_answer("...\n#### -5") == "-5"
    with pytest.raises(ValueError, match="####"):
        reference_answer("no final answer here")


def test_gsm8k_answer_extraction():
    text = "She has 3 + 4 = 7 apples. The answer is $18.00.\nQuestion: 99"
    assert answer_after_phrase(text) == "18"
    assert last_number(text) == "99"
    assert answer_after_phrase("so the answer is: 1,200.50 dollars") == "1200.5"
    assert answer_after_phrase("I do not know") is None
    assert last_number("I think 3 apples and 4.5 pears.") == "4.5"
    assert last_number("no digits") is None
    assert [normalize_number(x) for x in ("18.00", "$1,200.50", "-3", "7.", "abc")] == ["18", "1200.5", "-3", "7", None]


def test_gsm8k_solutions_become_chains_of_thought():
    solution = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"
    assert cot_solution(solution) == (
        "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = $18.\nThe answer is 18."
    )
    assert answer_after_phrase(cot_solution(solution)) == reference_answer(solution)


# --------------------------------------------------------------------------- intervals


def test_mean_interval_is_the_winrate_bootstrap():
    values = [0.0, 1.0, 1.0, 0.0, 1.0, 0.5, 1.0]
    mean, low, high = mean_interval(values, resamples=500, seed=3)
    assert mean == pytest.approx(4.5 / 7)
    assert (low, high) == bootstrap_ci(values, resamples=500, seed=3)
    assert low <= mean <= high
    assert mean_interval([0.25] * 5, resamples=100) == (0.25, 0.25, 0.25)


def test_bootstrap_statistic_of_the_mean_agrees_with_bootstrap_ci():
    x = np.random.default_rng(5).normal(size=37)
    got = bootstrap_statistic(x.size, lambda idx: float(x[idx].mean()), resamples=1500, confidence=0.9, seed=11)
    assert got == pytest.approx(bootstrap_ci(x, resamples=1500, confidence=0.9, seed=11), abs=1e-12)
    # a statistic that is nan on every resample has no interval
    low, high = bootstrap_statistic(4, lambda idx: float("nan"), resamples=10)
    assert math.isnan(low) and math.isnan(high)
