"""LoRA adapters (peft) from the shared :class:`instructrl.config.LoraConfig`, for any stage."""

from __future__ import annotations

from typing import Any

import torch


def apply_lora(
    model: torch.nn.Module, lcfg: Any, task_type: str = "CAUSAL_LM", layers: list[int] | None = None
) -> torch.nn.Module:
    """Wrap ``model`` with trainable LoRA adapters; everything else is frozen.

    ``task_type='SEQ_CLS'`` keeps a sequence-classification head (``score``) fully trainable and
    saves it with the adapter. ``layers`` limits the adapters to those decoder layers (indices).
    """
    from peft import LoraConfig, get_peft_model

    targets = "all-linear" if list(lcfg.target_modules) == ["all-linear"] else list(lcfg.target_modules)
    peft_cfg = LoraConfig(
        task_type=task_type,
        r=lcfg.r,
        lora_alpha=lcfg.alpha,
        lora_dropout=lcfg.dropout,
        target_modules=targets,
        layers_to_transform=layers,
    )
    return get_peft_model(model, peft_cfg)
