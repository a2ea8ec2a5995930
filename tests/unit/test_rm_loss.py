"""The K-way ranking loss against hand-computed values (softplus(x) = log(1 + e^x))."""

import math

import pytest
import torch

from instructrl.rm.loss import build_pair_index, kway_loss, pair_stats, per_prompt_loss, ranking_pairs

# -log σ(d) = softplus(-d), written out by hand for the margins used below
SP = {
    1.0: 0.31326168751822286,  # -log σ(1)
    -1.0: 1.3132616875182228,  # -log σ(-1)
    0.5: 0.4740769841801067,
    -0.5: 0.9740769841801067,
    1.5: 0.2014132779827524,
    -1.5: 1.7014132779827524,
    3.0: 0.04858735157374206,
}


def test_hand_values_are_softplus():
    for d, v in SP.items():
        assert v == pytest.approx(math.log1p(math.exp(-d)), abs=1e-15)


def test_ranking_pairs_ties_and_order():
    assert ranking_pairs([1, 2]) == [(0, 1)]
    assert ranking_pairs([2, 1]) == [(1, 0)]
    assert ranking_pairs([2, 1, 3]) == [(1, 0), (0, 2), (1, 2)]
    assert ranking_pairs([1, 1]) == []
    assert ranking_pairs([1, 2, 2, 3]) == [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]
    assert len(ranking_pairs(list(range(1, 10)))) == 36  # C(9, 2)


def _loss(scores, ranks):
    return float(kway_loss(torch.tensor(scores), build_pair_index([ranks])))


def test_k2():
    assert _loss([1.0, 0.0], [1, 2]) == pytest.approx(SP[1.0], abs=1e-6)
    assert _loss([1.0, 0.0], [2, 1]) == pytest.approx(SP[-1.0], abs=1e-6)


def test_k3_mean_over_c_3_2():
    # ranks: response 1 best, then 0, then 2; margins 2-0.5, 0.5-(-1), 2-(-1)
    expected = (SP[1.5] + SP[1.5] + SP[3.0]) / 3
    assert _loss([0.5, 2.0, -1.0], [2, 1, 3]) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.1504713025130823, abs=1e-12)


def test_k4_with_a_tie():
    # responses 1 and 2 tie: 5 comparisons, margins 0-1, 0-(-1), 0-0.5, 1-0.5, -1-0.5
    expected = (SP[-1.0] + SP[1.0] + SP[-0.5] + SP[0.5] + SP[-1.5]) / 5
    assert _loss([0.0, 1.0, -1.0, 0.5], [1, 2, 2, 3]) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.9552181242758824, abs=1e-12)


def test_k4_no_ties_divides_by_six():
    scores, ranks = [3.0, 2.0, 1.5, 0.0], [1, 2, 3, 4]
    margins = [1.0, 1.5, 3.0, 0.5, 2.0, 1.5]
    expected = sum(math.log1p(math.exp(-m)) for m in margins) / 6
    assert _loss(scores, ranks) == pytest.approx(expected, abs=1e-6)


def test_batch_is_mean_over_prompts_not_pairs():
    # prompt A (K=2), prompt B (K=3), prompt C (all tied: no comparisons, contributes 0)
    scores = torch.tensor([1.0, 0.0, 0.5, 2.0, -1.0, 4.0, 4.0])
    pairs = build_pair_index([[1, 2], [2, 1, 3], [1, 1]])
    per = per_prompt_loss(scores, pairs)
    assert per.tolist() == pytest.approx([SP[1.0], (2 * SP[1.5] + SP[3.0]) / 3, 0.0], abs=1e-6)
    assert float(kway_loss(scores, pairs)) == pytest.approx((SP[1.0] + (2 * SP[1.5] + SP[3.0]) / 3) / 3, abs=1e-6)
    # the pair-mean (what "independent pairs" training would use) differs
    assert float(kway_loss(scores, pairs)) != pytest.approx((SP[1.0] + 2 * SP[1.5] + SP[3.0]) / 4, abs=1e-3)


def test_micro_batches_sum_to_the_step_loss():
    torch.manual_seed(0)
    ranks = [[1, 2, 3], [2, 1], [1, 3, 2, 4], [1, 1, 2]]
    scores = torch.randn(sum(len(r) for r in ranks))
    whole = kway_loss(scores, build_pair_index(ranks))
    a = kway_loss(scores[:5], build_pair_index(ranks[:2]), num_prompts=4)
    b = kway_loss(scores[5:], build_pair_index(ranks[2:]), num_prompts=4)
    assert float(a + b) == pytest.approx(float(whole), abs=1e-6)


def test_gradient_of_k2():
    scores = torch.tensor([0.3, -0.2], requires_grad=True)
    kway_loss(scores, build_pair_index([[1, 2]])).backward()
    g = 1 - 1 / (1 + math.exp(-0.5))  # 1 - σ(0.5)
    assert scores.grad.tolist() == pytest.approx([-g, g], abs=1e-6)


def test_agrees_with_a_naive_loop():
    torch.manual_seed(1)
    ranks = [[3, 1, 2, 2, 5, 4, 7, 6, 8], [1, 2], [2, 2, 1], [1, 2, 3, 4, 5]]
    scores = torch.randn(sum(len(r) for r in ranks))
    naive, off = [], 0
    for r in ranks:
        terms = [
            -torch.nn.functional.logsigmoid(scores[off + i] - scores[off + j])
            for i in range(len(r))
            for j in range(len(r))
            if r[i] < r[j]
        ]
        naive.append(torch.stack(terms).mean())
        off += len(r)
    assert float(kway_loss(scores, build_pair_index(ranks))) == pytest.approx(
        float(torch.stack(naive).mean()), abs=1e-6
    )


def test_pair_stats():
    scores = torch.tensor([0.0, 1.0, 1.0, -1.0, 2.0, 2.0])
    st = pair_stats(scores, build_pair_index([[1, 2], [1, 2], [2, 1]]))  # wrong, right, exact tie of scores
    assert st["correct"].tolist() == [0.0, 1.0, 0.0]
    assert st["margin"].tolist() == pytest.approx([-1.0, 2.0, 0.0])
