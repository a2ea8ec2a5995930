"""PPO's pure math against hand-computed values: reward shaping, GAE, masked whitening, the clipped
policy and value losses, entropy, the KL controllers, score normalization and the ptx term."""

import math

import pytest
import torch

from instructrl.models.forward import entropy_from_logits, token_logprobs
from instructrl.ppo.advantages import (
    RunningMoments,
    gae,
    group_advantages,
    last_index,
    normalize_scores,
    sequence_kl,
    shape_rewards,
)
from instructrl.ppo.kl_control import AdaptiveKLController, FixedKLController, build_kl_controller
from instructrl.ppo.loss import policy_loss, value_loss
from instructrl.ppo.ptx import collate_blocks, make_blocks, ptx_nll_from_logits, split_blocks
from instructrl.utils.masked import masked_whiten

T = torch.tensor
M = lambda rows: torch.tensor(rows, dtype=torch.bool)  # noqa: E731


def test_shape_rewards_kl_at_every_token_and_score_at_the_last():
    scores = T([2.0, -1.0])
    logprobs = T([[-1.0, -2.0, -3.0], [-0.5, -0.5, -7.0]])
    ref = T([[-1.5, -2.0, -2.0], [-1.0, -0.2, -1.0]])
    mask = M([[1, 1, 1], [1, 1, 0]])
    rewards, kl = shape_rewards(scores, logprobs, ref, mask, kl_coef=0.1)
    # row 0: log-ratios 0.5, 0, -1 -> -0.05, 0, 0.1 + 2
    # row 1: log-ratios 0.5, -0.3 (the third token is padding) -> -0.05, 0.03 - 1
    torch.testing.assert_close(rewards, T([[-0.05, 0.0, 2.1], [-0.05, -0.97, 0.0]]))
    torch.testing.assert_close(kl, T([[0.5, 0.0, -1.0], [0.5, -0.3, 0.0]]))
    torch.testing.assert_close(sequence_kl(kl, mask), T((-0.5 + 0.2) / 2))
    assert last_index(mask).tolist() == [2, 1]


def test_group_advantages_leave_one_out_hand_computed():
    # two prompts, three responses each; per-token rewards (KL terms and the score at the last token)
    rewards = T([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.5, 0.5, 3.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [4.0, 0.0, 0.0]])
    mask = M([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]])
    # returns of rows 0-2 (masked sums): 1, 2, 4 -> baselines (2+4)/2=3, (1+4)/2=2.5, 1.5
    # rows 3-5: returns 1, 1, 4 -> baselines 2.5, 2.5, 1
    adv = group_advantages(rewards, mask, 3)
    want = T([-2.0, -0.5, 2.5, -1.5, -1.5, 3.0])[:, None] * mask.float()
    torch.testing.assert_close(adv, want)
    # the same responses with nothing to tell them apart have no advantage, whatever the prompt's level
    flat = group_advantages(T([[5.0], [5.0], [-7.0], [-7.0]]), M([[1], [1], [1], [1]]), 2)
    torch.testing.assert_close(flat, T([[0.0], [0.0], [0.0], [0.0]]))
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(rewards, mask, 4)
    with pytest.raises(ValueError, match="groups of 1"):
        group_advantages(rewards, mask, 1)


def test_gae_hand_computed_with_padding():
    rewards = T([[1.0, 0.0, 2.0], [1.0, 2.0, 5.0]])
    values = T([[0.5, 1.0, 1.5], [0.5, 1.0, 9.0]])
    mask = M([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0: delta_2 = 2 - 1.5 = 0.5; delta_1 = 0 + 0.9*1.5 - 1 = 0.35 -> A_1 = 0.35 + 0.72*0.5 = 0.71;
    #        delta_0 = 1 + 0.9*1 - 0.5 = 1.4 -> A_0 = 1.4 + 0.72*0.71 = 1.9112
    # row 1: the padded step does not exist: A_1 = 2 - 1 = 1; A_0 = 1.4 + 0.72*1 = 2.12
    torch.testing.assert_close(adv, T([[1.9112, 0.71, 0.5], [2.12, 1.0, 0.0]]))
    torch.testing.assert_close(ret, T([[2.4112, 1.71, 2.0], [2.62, 2.0, 0.0]]))


def test_gae_with_lambda_one_is_discounted_return_minus_value():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    lengths = [6, 3, 1, 5]
    mask = torch.arange(6)[None, :] < T(lengths)[:, None]
    adv, ret = gae(rewards, values, mask, gamma=0.7, lam=1.0)
    for b, n in enumerate(lengths):
        for t in range(n):
            mc = sum(0.7**k * float(rewards[b, t + k]) for k in range(n - t))
            assert float(ret[b, t]) == pytest.approx(mc, abs=1e-5)
            assert float(adv[b, t]) == pytest.approx(mc - float(values[b, t]), abs=1e-5)
        assert float(adv[b, n:].abs().sum()) == 0.0
    # lambda = 0: one-step TD errors
    adv0, _ = gae(rewards, values, mask, gamma=0.7, lam=0.0)
    assert float(adv0[1, 0]) == pytest.approx(float(rewards[1, 0] + 0.7 * values[1, 1] - values[1, 0]), abs=1e-6)
    assert float(adv0[1, 2]) == pytest.approx(float(rewards[1, 2] - values[1, 2]), abs=1e-6)


def test_masked_whitening_ignores_padding():
    x = T([[1.0, 2.0, 3.0, 100.0]])
    mask = M([[1, 1, 1, 0]])
    w = masked_whiten(x, mask)
    # mean 2, unbiased variance (1 + 0 + 1) / 2 = 1
    torch.testing.assert_close(w[0, :3], T([-1.0, 0.0, 1.0]), atol=1e-6, rtol=0)
    w2 = masked_whiten(x, mask, shift_mean=False)
    torch.testing.assert_close(w2[0, :3], T([1.0, 2.0, 3.0]), atol=1e-6, rtol=0)


def test_clipped_policy_loss_hand_computed():
    old = torch.zeros(1, 5)
    new = T([[math.log(1.5), math.log(0.5), 0.0, math.log(0.5), 50.0]])
    adv = T([[1.0, 1.0, -2.0, -1.0, 1e6]])
    mask = M([[1, 1, 1, 1, 0]])
    loss, st = policy_loss(new, old, adv, mask, cliprange=0.2)
    # per token max(-A r, -A clip(r)): ratio 1.5, A 1 -> max(-1.5, -1.2) = -1.2 (clipped);
    # ratio 0.5, A 1 -> max(-0.5, -0.8) = -0.5; ratio 1, A -2 -> 2; ratio 0.5, A -1 -> max(0.5, 0.8) = 0.8 (clipped)
    assert float(loss) == pytest.approx((-1.2 - 0.5 + 2.0 + 0.8) / 4, abs=1e-6)
    assert float(st["clipfrac"]) == pytest.approx(0.5)
    assert float(st["ratio"]) == pytest.approx((1.5 + 0.5 + 1 + 0.5) / 4, abs=1e-6)
    expected_kl = 0.5 * (math.log(1.5) ** 2 + 2 * math.log(0.5) ** 2) / 4
    assert float(st["approx_kl"]) == pytest.approx(expected_kl, abs=1e-6)
    # the gradient flows only through unclipped tokens: d/dlogp of -A r / 4 = -A r / 4 at token 1 only
    new_g = new.clone().requires_grad_(True)
    policy_loss(new_g, old, adv, mask, 0.2)[0].backward()
    torch.testing.assert_close(new_g.grad, T([[0.0, -0.5 / 4, 2.0 / 4, 0.0, 0.0]]))


def test_clipped_value_loss_hand_computed():
    values = T([[1.0, 2.0, 7.0]])
    old = T([[0.5, 2.0, 0.0]])
    returns = T([[1.5, 1.0, 0.0]])
    mask = M([[1, 1, 0]])
    loss, st = value_loss(values, old, returns, mask, cliprange_value=0.2)
    # token 0: (1 - 1.5)^2 = 0.25 vs clipped value 0.7: (0.7 - 1.5)^2 = 0.64 -> 0.64; token 1: 1 vs 1 -> 1
    assert float(loss) == pytest.approx(0.5 * (0.64 + 1.0) / 2, abs=1e-6)
    assert float(st["clipfrac"]) == pytest.approx(0.5)
    unclipped, _ = value_loss(values, old, returns, mask, cliprange_value=None)
    assert float(unclipped) == pytest.approx(0.5 * (0.25 + 1.0) / 2, abs=1e-6)


def test_token_logprobs_and_entropy():
    logits = T([[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -1e9, -1e9]])
    lp, ent = token_logprobs(logits, T([2, 1])), entropy_from_logits(logits)
    torch.testing.assert_close(lp, T([math.log(0.25), math.log(0.75)]))
    torch.testing.assert_close(ent, T([math.log(4.0), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]))


def test_adaptive_kl_controller_hand_computed():
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    c.update(9.0, n_steps=256)  # error 0.5 clipped to 0.2: beta *= 1 + 0.2 * 256 / 10000
    assert c.coef == pytest.approx(0.1 * 1.00512)
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    c.update(6.6, n_steps=256)  # error 0.1
    assert c.coef == pytest.approx(0.1 * 1.00256)
    c.update(0.0, n_steps=100)  # error -1 clipped to -0.2
    assert c.coef == pytest.approx(0.1 * 1.00256 * (1 - 0.2 * 100 / 10000))
    f = FixedKLController(0.02)
    assert f.update(100.0, 64) == 0.02
    assert isinstance(build_kl_controller("adaptive", 0.1, 6.0, 100), AdaptiveKLController)
    with pytest.raises(ValueError, match="target"):
        build_kl_controller("adaptive", 0.1, None, 100)


def test_running_moments_and_score_normalization():
    m = RunningMoments()
    m.update(T([1.0, 2.0, 3.0]))
    m.update(T([4.0, 5.0]))
    assert (m.mean, m.var, m.count) == (pytest.approx(3.0), pytest.approx(2.0), 5)
    m2 = RunningMoments()
    out = normalize_scores(T([1.0, 3.0]), "running", m2)
    torch.testing.assert_close(out, T([-1.0, 1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        normalize_scores(T([1.0, 2.0, 3.0]), "batch"), T([-1.0, 0.0, 1.0]) / math.sqrt(2 / 3), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(normalize_scores(T([-5.0, 0.5, 5.0]), "none", clip=1.0), T([-1.0, 0.5, 1.0]))


def test_ptx_blocks_and_nll_hand_computed():
    blocks = make_blocks([[5, 6, 7], [8], [9, 10]], eos_id=0, block_size=4)
    # stream 5 6 7 0 8 0 9 10 0 -> [5 6 7 0] [8 0 9 10] and the short tail [0] is dropped
    assert blocks == [[5, 6, 7, 0], [8, 0, 9, 10]]
    ids, mask = collate_blocks([[1, 2, 3], [1, 2]], pad_id=99)
    assert ids.tolist() == [[1, 2, 3], [1, 2, 99]] and mask.tolist() == [[True] * 3, [True, True, False]]
    # logits giving p(2|1) = 1/2, p(3|1 2) = 1/4 in row 0 and p(2|1) = 1/2 in row 1
    logits = torch.full((2, 3, 4), -1e9)
    logits[:, 0] = torch.log(T([0.25, 0.25, 0.5, 1e-30]))
    logits[0, 1] = torch.log(T([0.25, 0.25, 0.25, 0.25]))
    nll = ptx_nll_from_logits(logits, ids, mask)
    assert float(nll) == pytest.approx((math.log(2) + math.log(4) + math.log(2)) / 3, abs=1e-5)
    train, held = split_blocks([[i, i + 1] for i in range(200)], 0.25)
    assert len(train) + len(held) == 200 and 25 <= len(held) <= 75
    assert split_blocks([[i, i + 1] for i in range(200)], 0.25) == (train, held)  # deterministic
