"""Per-token reward shaping, generalized advantage estimation and score normalization.

All tensors are response-aligned: ``[B, R]`` where position ``t`` is the ``t``-th response token
and ``mask[b, t]`` is True for real tokens. A row's real tokens form a prefix (right padding);
the last real token is where the episode ends.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from instructrl.utils.masked import masked_whiten


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """[B] index of the last True position of each row of a right-padded ``mask`` (0 when empty)."""
    return (mask.long().sum(-1) - 1).clamp(min=0)


def shape_rewards(
    scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """InstructGPT's per-token rewards: ``-kl_coef * (log pi(y_t) - log pi_ref(y_t))`` at every
    response token, plus the sequence's score at its last token.

    Returns ``(rewards, log_ratio)``, both ``[B, R]`` and zero where ``mask`` is False; the masked
    row sum of ``log_ratio`` is the sampled KL of the response.
    """
    m = mask.to(logprobs.dtype)
    log_ratio = (logprobs - ref_logprobs) * m
    rewards = -kl_coef * log_ratio
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_index(mask)] += scores.to(rewards.dtype)
    return rewards * m, log_ratio


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over each row's real tokens.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` (``V`` after the last token is 0) and
    ``A_t = delta_t + gamma * lam * A_{t+1}``. Returns ``(advantages, returns = advantages + values)``,
    zero where ``mask`` is False.
    """
    m = mask.to(values.dtype)
    values = values * m
    R = rewards.shape[1]
    adv = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(R)):
        nxt = m[:, t + 1] if t + 1 < R else torch.zeros_like(running)
        next_value = values[:, t + 1] * nxt if t + 1 < R else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * nxt * running
        adv[:, t] = running
    adv = adv * m
    return adv, (adv + values) * m


def group_advantages(rewards: torch.Tensor, mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """The leave-one-out baseline (RLOO; Ahmadian et al. 2024) over consecutive groups of rows.

    Rows ``g*k .. g*k+k-1`` are ``k = group_size`` responses to one prompt. A response's return is the
    row sum of its per-token ``rewards`` (its score minus the KL penalty); its advantage is that return
    less the mean return of the other ``k - 1`` responses, the same at each of its tokens. The baseline
    does not depend on the response it is subtracted from, so the policy gradient stays unbiased, and it
    removes what the prompt alone decides (how hard it is), which a single sample cannot separate."""
    if group_size < 2 or rewards.shape[0] % group_size:
        raise ValueError(f"{rewards.shape[0]} rows cannot form groups of {group_size} (>= 2) responses")
    m = mask.to(rewards.dtype)
    returns = (rewards * m).sum(-1).view(-1, group_size)
    baseline = (returns.sum(-1, keepdim=True) - returns) / (group_size - 1)
    return (returns - baseline).reshape(-1, 1) * m


class RunningMoments:
    """Mean and standard deviation of every score seen so far (Chan et al.'s parallel update);
    its state is three numbers, saved with a checkpoint for exact resume."""

    def __init__(self, mean: float = 0.0, var: float = 1.0, count: float = 0.0):
        self.mean, self.var, self.count = mean, var, count

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 0.0))

    def update(self, xs: torch.Tensor) -> None:
        xs = xs.detach().double().flatten()
        n = xs.numel()
        if n == 0:
            return
        b_mean = float(xs.mean())
        b_var = float(xs.var(unbiased=False))
        total = self.count + n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total

    def state(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}


def normalize_scores(
    scores: torch.Tensor, how: str, moments: RunningMoments | None = None, clip: float | None = None, eps: float = 1e-8
) -> torch.Tensor:
    """``how``: 'none'; 'batch' (zero mean, unit variance within the batch); 'running' (subtract the
    running mean and divide by the running std of all scores so far, this batch included: ``moments``
    is updated). Then clip to ``[-clip, clip]`` when ``clip`` is set."""
    out = scores.float()
    if how == "batch" and out.numel() > 1:
        out = (out - out.mean()) / (out.std(unbiased=False) + eps)
    elif how == "running":
        if moments is None:
            raise ValueError("score normalization 'running' needs a RunningMoments")
        moments.update(out)
        out = (out - moments.mean) / (moments.std + eps)
    elif how not in ("none", "batch"):
        raise ValueError(f"unknown score normalization {how!r}: use 'none', 'batch' or 'running'")
    if clip is not None:
        out = out.clamp(-clip, clip)
    return out


def sequence_kl(log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of each response's summed per-token log-ratio (the KL the controller sees)."""
    return (log_ratio * mask.to(log_ratio.dtype)).sum(-1).mean()


@dataclasses.dataclass
class Shaped:
    """A rollout's per-token rewards and what GAE makes of them, all ``[B, R]``."""

    rewards: torch.Tensor
    log_ratio: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


def shape(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    kl_coef: float,
    gamma: float,
    lam: float,
    whiten: bool,
    cut: torch.Tensor | None = None,
    missing_eos_penalty: float | None = None,
    group_size: int | None = None,
) -> Shaped:
    """Scores -> per-token rewards (KL penalty, the score at the last token) -> advantages and returns.

    ``cut`` [B] marks responses the sampler cut off; ``missing_eos_penalty`` is subtracted from their
    score. ``whiten``: advantages to zero mean and unit variance over the batch's real tokens.
    ``group_size``: the leave-one-out group baseline instead of GAE (:func:`group_advantages`; ``values``
    are not read and the returns are zero)."""
    if missing_eos_penalty is not None and cut is not None:
        scores = scores - missing_eos_penalty * cut.to(scores.dtype)
    rewards, log_ratio = shape_rewards(scores, logprobs, ref_logprobs, mask, kl_coef)
    if group_size is not None:
        advantages, returns = group_advantages(rewards, mask, group_size), torch.zeros_like(rewards)
    else:
        advantages, returns = gae(rewards, values, mask, gamma, lam)
    if whiten:
        advantages = masked_whiten(advantages, mask) * mask
    return Shaped(rewards, log_ratio, advantages, returns)
