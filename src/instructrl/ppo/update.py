"""One PPO update: ``ppo.epochs`` passes over a rollout in shuffled minibatches, the clipped
policy and value losses (and PPO-ptx's pretraining term), one optimizer step per minibatch."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from instructrl.models.forward import response_logprobs
from instructrl.ppo.advantages import Shaped
from instructrl.ppo.config import PPOConfig
from instructrl.ppo.loss import policy_loss, value_loss
from instructrl.ppo.ptx import PtxData, ptx_nll
from instructrl.ppo.rollout import Rollout, value_predictions
from instructrl.utils.masked import masked_mean
from instructrl.utils.run import nonfinite_error
from instructrl.utils.seed import derive


@dataclasses.dataclass
class Trainables:
    """What an update changes: the policy and the value function (None under ``ppo.advantage=group``),
    each with its optimizer and schedule."""

    policy: torch.nn.Module
    value: torch.nn.Module | None
    policy_opt: Any
    policy_sched: Any
    value_opt: Any
    value_sched: Any


def ppo_epochs(
    cfg: PPOConfig,
    step: int,
    rollout: Rollout,
    shaped: Shaped,
    models: Trainables,
    ptx: PtxData | None,
    device: torch.device,
    autocast_ctx: Callable[[], Any],
    out: Path,
) -> dict[str, float]:
    """``ppo.epochs`` passes over the rollout in shuffled minibatches; one optimizer step of policy
    and value per minibatch (micro-batches accumulate). Losses are token means over the minibatch."""
    batch, mask = rollout.batch, rollout.batch.mask
    policy, value = models.policy, models.value
    sums: dict[str, float] = {}
    n_minibatches = 0
    first_ratio_error = 0.0
    order_rng = torch.Generator().manual_seed(derive(cfg.run.seed, "minibatches", step))
    policy.train()
    if value is not None:
        value.train()
    for epoch in range(cfg.ppo.epochs):
        perm = torch.randperm(len(batch), generator=order_rng)
        for m, start in enumerate(range(0, len(batch), cfg.ppo.minibatch_size)):
            minibatch = perm[start : start + cfg.ppo.minibatch_size]
            minibatch_tokens = mask[minibatch].sum().clamp(min=1)
            for micro in minibatch.split(cfg.ppo.micro_batch_size):
                sub = batch.select(micro).to(device)
                width = sub.tokens.shape[1]
                weight = float(mask[micro].sum() / minibatch_tokens)  # token mean over the whole minibatch

                def rows(t: torch.Tensor, micro=micro, width=width) -> torch.Tensor:
                    return t[micro, :width].to(device)

                with autocast_ctx():
                    logprobs, entropy = response_logprobs(policy, sub, cfg.rollout.temperature, with_entropy=True)
                    p_loss, p_stats = policy_loss(
                        logprobs, rows(rollout.logprobs), rows(shaped.advantages), sub.mask, cfg.ppo.cliprange
                    )
                    logged = {"policy_loss": p_loss, **p_stats, "entropy": masked_mean(entropy, sub.mask)}
                    if value is not None:
                        values = value_predictions(value, sub)
                        v_loss, v_stats = value_loss(
                            values, rows(rollout.values), rows(shaped.returns), sub.mask, cfg.value.cliprange
                        )
                        logged |= {"value_loss": v_loss, "value_clipfrac": v_stats["clipfrac"]}
                # policy and value share no weight: one backward of the sum gives each its own gradient
                loss = p_loss + v_loss if value is not None else p_loss
                if not torch.isfinite(loss):
                    raise nonfinite_error("ppo", step, out)
                (loss * weight).backward()
                if epoch == 0 and m == 0:  # no update yet: the ratio must be 1
                    diff = (logprobs.detach() - rows(rollout.logprobs)).abs() * sub.mask
                    first_ratio_error = max(first_ratio_error, float(diff.max()))
                for k, v in logged.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) * weight
            if ptx is not None and cfg.ptx.coef > 0:
                ids, block_mask = ptx.batch(step, epoch, m, cfg.ptx.batch_size)
                with autocast_ctx():
                    nll = ptx_nll(policy, ids.to(device), block_mask.to(device))
                if not torch.isfinite(nll):
                    raise nonfinite_error("ppo (ptx loss)", step, out)
                (cfg.ptx.coef * nll).backward()
                sums["ptx_loss"] = sums.get("ptx_loss", 0.0) + float(nll.detach())
            grad_norm = clip_and_step(policy, models.policy_opt, models.policy_sched, cfg.optim.max_grad_norm)
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm
            if value is not None:
                value_grad_norm = clip_and_step(value, models.value_opt, models.value_sched, cfg.optim.max_grad_norm)
                sums["value_grad_norm"] = sums.get("value_grad_norm", 0.0) + value_grad_norm
            n_minibatches += 1
    policy.eval()
    if value is not None:
        value.eval()
    stats = {f"ppo/{k}": v / n_minibatches for k, v in sums.items()}
    stats["ppo/first_ratio_error"] = first_ratio_error
    return stats


def clip_and_step(model: torch.nn.Module, opt, sched, max_norm: float) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if max_norm > 0 else 0.0
    if not math.isfinite(norm):
        raise FloatingPointError("ppo: the gradient norm is NaN/inf")
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return norm
