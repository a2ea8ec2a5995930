"""PPO's clipped losses and the per-token quantities they need, on response-aligned ``[B, R]``
tensors with ``mask`` True at real tokens. Means are over all real tokens of the minibatch."""

from __future__ import annotations

import torch

from instructrl.utils.masked import masked_mean


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, cliprange: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate: ``mean(max(-A * r, -A * clip(r, 1 - eps, 1 + eps)))`` with
    ``r = exp(logprobs - old_logprobs)``. Stats: clip fraction, approximate KL
    ``mean((logprobs - old)^2) / 2`` and the mean ratio."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": 0.5 * masked_mean(log_ratio.detach() ** 2, mask),
            "ratio": masked_mean(ratio.detach(), mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``0.5 * mean(max((V - R)^2, (V_clip - R)^2))`` where ``V_clip`` keeps the new value within
    ``cliprange_value`` of the rollout's; unclipped ``0.5 * mean((V - R)^2)`` when it is None."""
    err = (values - returns) ** 2
    if cliprange_value is None:
        return 0.5 * masked_mean(err, mask), {"clipfrac": torch.zeros(())}
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    err_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((err_clipped > err).float(), mask)}
    return loss, stats
