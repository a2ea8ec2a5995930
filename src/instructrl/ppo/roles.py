"""The four roles of PPO and how they are held: policy, frozen reference, value function (the
reward model is built by :mod:`instructrl.ppo.reward`), the sampler's copy of the policy, and the
adapters that save policy and value (and their optimizers) as one checkpoint."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch

from instructrl.models.loading import freeze_lower_layers, load_model
from instructrl.models.lora import apply_lora
from instructrl.models.scalar import ScalarRewardModel, init_reward_model
from instructrl.ppo.config import PPOConfig
from instructrl.utils.device import DTYPES

log = logging.getLogger(__name__)


def build_models(
    cfg: PPOConfig, tok: Any, device: torch.device, frozen_device: torch.device
) -> tuple[torch.nn.Module, torch.nn.Module | None, ScalarRewardModel | None]:
    """(policy, separate reference or None when LoRA provides it, value or None under
    ``ppo.advantage=group``). Dropout is 0 in all of them so that rollout and training see the same
    function (ratio 1 before an update)."""
    pc = cfg.policy
    policy = load_model(pc.name_or_path, dtype=DTYPES[pc.dtype], dropout=0.0, tokenizer=tok)
    ref_model = None
    if cfg.lora.enabled:
        policy = apply_lora(policy, cfg.lora)
    else:
        ref_model = load_model(
            pc.name_or_path,
            dtype=DTYPES[cfg.memory.frozen_dtype],
            dropout=0.0,
            tokenizer=tok,
            device="cpu" if cfg.memory.offload_frozen else frozen_device,
        )
        ref_model.requires_grad_(False).eval()
    value = None
    if cfg.ppo.advantage == "gae":
        value_init = cfg.value.init or (cfg.reward.model if cfg.reward.kind == "model" else pc.name_or_path)
        value = init_reward_model(value_init, tokenizer=tok, dtype=DTYPES[pc.dtype], dropout=0.0)
        if cfg.lora.enabled:
            value.model = apply_lora(value.model, cfg.lora, task_type="SEQ_CLS")
    if cfg.ppo.trainable_layers:
        n = freeze_lower_layers(policy, cfg.ppo.trainable_layers)
        log.info(
            "ppo: training the policy's top %d layers and final norm (%.1fM parameters)",
            cfg.ppo.trainable_layers,
            n / 1e6,
        )
    if value is not None and cfg.value.trainable_layers:
        n = value.freeze_lower_layers(cfg.value.trainable_layers)
        log.info(
            "ppo: training the value function's top %d layers, final norm and head (%.1fM parameters)",
            cfg.value.trainable_layers,
            n / 1e6,
        )
    if pc.gradient_checkpointing:
        policy.gradient_checkpointing_enable()
        if value is not None:
            value.hf_model.gradient_checkpointing_enable()
    return policy.to(device).eval(), ref_model, value.to(device).eval() if value is not None else None


class SamplerCopy:
    """A half-precision copy of the policy for the sampler, refreshed from the policy before each rollout.

    Under autocast every decode step casts each fp32 weight to bf16 again (the whole model, for one
    token per row); the copy is cast once per rollout instead. Buffers (rotary frequencies) keep
    their dtype; tied weights stay tied (the copy is a deep copy)."""

    def __init__(self, policy: torch.nn.Module, dtype: torch.dtype):
        self.model = copy.deepcopy(policy)
        for p in self.model.parameters():
            p.requires_grad_(False)
            p.data = p.data.to(dtype)
        self.model.eval()
        # frozen weights (ppo.trainable_layers) never change: only the trained ones are copied again
        self._pairs = [
            (src, dst) for src, dst in zip(policy.parameters(), self.model.parameters()) if src.requires_grad
        ]

    @torch.no_grad()
    def refresh(self) -> None:
        for src, dst in self._pairs:
            dst.copy_(src)


def sampler_weights(cfg: PPOConfig, policy: torch.nn.Module, amp_dtype: torch.dtype) -> SamplerCopy | None:
    """The copy the sampler decodes with (``rollout.weights``), or None to decode with the policy itself."""
    kind = cfg.rollout.weights
    if kind == "auto":
        kind = "bf16" if amp_dtype == torch.bfloat16 and not cfg.lora.enabled else "policy"
    if kind == "policy":
        return None
    if cfg.lora.enabled:
        raise ValueError(f"rollout.weights={kind} needs a policy without LoRA adapters; use 'policy' or 'auto'")
    if all(p.dtype == DTYPES[kind] for p in policy.parameters()):
        return None  # the policy is held in that dtype already (policy.dtype): a copy would only cost memory
    return SamplerCopy(policy, DTYPES[kind])


class PolicyAndValue:
    """Saves the policy into a checkpoint directory and the value function (if any) into its ``value/``."""

    def __init__(self, policy: torch.nn.Module, value: torch.nn.Module | None):
        self.policy, self.value = policy, value

    def save_pretrained(self, path: str | Path, **kwargs: Any) -> None:
        self.policy.save_pretrained(path, **kwargs)
        if self.value is not None:
            self.value.model.save_pretrained(Path(path) / "value", **kwargs)


class Pair:
    """Two optimizers (or schedulers) saved and restored as one; ``value`` is None without a value function."""

    def __init__(self, policy: Any, value: Any | None):
        self.policy, self.value = policy, value

    def state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "value": self.value.state_dict() if self.value is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        if self.value is not None:
            self.value.load_state_dict(state["value"])
