"""AdamW and warm-up + cosine/linear/constant learning-rate schedules, shared by the training stages."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from instructrl.config import OptimConfig


def lr_lambda(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return min_ratio + (1.0 - min_ratio) * (1.0 - progress)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    model: torch.nn.Module, cfg: OptimConfig, total_steps: int, lr_for: Callable[[str], float | None] | None = None
):
    """AdamW (no weight decay on biases and norms) and its LambdaLR schedule. ``lr_for(name)`` may give
    a parameter its own peak learning rate (None: ``cfg.lr``); the schedule scales every group alike."""
    groups: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr = (lr_for(name) if lr_for else None) or cfg.lr
        groups.setdefault((p.ndim < 2 or "norm" in name.lower(), lr), []).append(p)
    params = [
        {"params": ps, "lr": lr, "weight_decay": 0.0 if no_decay else cfg.weight_decay}
        for (no_decay, lr), ps in sorted(groups.items(), key=lambda kv: (kv[0][1] != cfg.lr, kv[0][0]))
    ]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    warmup = int(round(cfg.warmup_ratio * total_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, total_steps, warmup, cfg.schedule, cfg.min_lr_ratio)
    )
    return opt, sched
