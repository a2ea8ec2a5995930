"""The over-optimization monitor: how far the policy has moved and what every reward thinks of it.

At a few points of a run the same held-out prompts are sampled with the current policy (same seed
each time); the responses' KL to the reference (the summed per-token log-ratio, averaged) and the
mean score under the training reward and each monitor reward are logged as ``monitor/*``. With a
learned reward model as proxy and the gold reward beside it, these are the points of Gao et al.'s
over-optimization curve for this run."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from instructrl.models.forward import batched, collate, encode_prompts, response_logprobs
from instructrl.ppo.advantages import sequence_kl
from instructrl.ppo.config import PPOConfig
from instructrl.ppo.reward import build_reward
from instructrl.ppo.rollout import load_prompts
from instructrl.records import PromptText
from instructrl.utils.device import DTYPES
from instructrl.utils.seed import derive


class Monitor:
    """``monitor()`` -> the ``monitor/*`` metrics of the policy as it is now (None when monitoring is off)."""

    def __init__(
        self,
        cfg: PPOConfig,
        tok: Any,
        training_reward: Callable,
        *,
        generator: Any,
        policy: Any,
        reference: Callable,
        device: torch.device,
        frozen_device: torch.device,
        amp_dtype: torch.dtype,
        autocast_ctx: Callable[[], Any],
    ):
        self.cfg, self.tok, self.generator, self.policy, self.reference = cfg, tok, generator, policy, reference
        self.device, self.autocast_ctx = device, autocast_ctx
        prompts = load_prompts(cfg.monitor.prompts, cfg.monitor.max_prompts) if cfg.monitor.every else []
        self.prompts = [p for p in prompts for _ in range(cfg.monitor.samples_per_prompt)]
        self.prompt_ids = encode_prompts(tok, self.prompts, cfg.data.max_prompt_tokens)
        frozen = DTYPES[cfg.memory.frozen_dtype]
        self.rewards = {"reward": training_reward} | {
            m.name: build_reward(
                m.as_reward(cfg.reward),
                tok,
                device=frozen_device,
                amp_dtype=amp_dtype,
                dtype=frozen,
                offload=cfg.memory.offload_frozen,
                eos_ids=[tok.eos_token_id],
            )
            for m in (cfg.monitor.rewards if cfg.monitor.every else [])
        }

    def due(self, step: int) -> bool:
        every = self.cfg.monitor.every
        return bool(every) and (step % every == 0 or step == self.cfg.ppo.steps)

    def __call__(self) -> dict[str, float]:
        c = self.cfg
        return monitor_scores(
            self.prompts,
            self.prompt_ids,
            generator=self.generator,
            policy=self.policy,
            reference=self.reference,
            rewards=self.rewards,
            pad_id=self.tok.pad_token_id,
            device=self.device,
            autocast_ctx=self.autocast_ctx,
            max_new_tokens=c.rollout.max_new_tokens,
            temperature=c.rollout.temperature,
            top_p=c.rollout.top_p,
            seed=derive(c.run.seed, "monitor"),
            forward_batch_size=c.rollout.forward_batch_size,
        )


@torch.no_grad()
def monitor_scores(
    prompts: list[PromptText],
    prompt_ids: list[list[int]],
    *,
    generator: Any,
    policy: torch.nn.Module,
    reference: Callable,
    rewards: dict[str, Callable],
    pad_id: int,
    device: torch.device,
    autocast_ctx: Callable[[], Any],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    forward_batch_size: int,
) -> dict[str, float]:
    """``monitor/kl``, ``monitor/sqrt_kl``, ``monitor/<name>`` (mean score) for every reward."""
    with autocast_ctx():
        gens = generator.generate(
            prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
        )
    ids = [g.token_ids for g in gens]
    batch = collate(prompt_ids, ids, pad_id)
    with autocast_ctx():
        logprobs = batched(lambda b: response_logprobs(policy, b, temperature)[0], batch, forward_batch_size, device)
        ref_logprobs = reference(batch)
    kl = float(sequence_kl((logprobs - ref_logprobs) * batch.mask, batch.mask))
    out = {"monitor/kl": kl, "monitor/sqrt_kl": math.sqrt(max(kl, 0.0))}
    texts, finish = [g.text for g in gens], [g.finish_reason for g in gens]
    for name, fn in rewards.items():
        scores = fn(prompts, texts, ids, finish)
        out[f"monitor/{name}"] = sum(scores) / len(scores)
    return out
