"""The reward PPO maximizes, behind one small interface.

A reward is a callable ``fn(prompts, responses, response_ids, finish_reasons) -> list[float]``:
``responses`` are the decoded texts (EOS and special tokens removed), ``response_ids`` the sampled
token ids, ``finish_reasons`` the sampler's (``"length"``: cut off by the token limit).
:class:`RewardModelReward` scores with a trained reward model (its normalization bias applied; a
cut-off response is read without EOS, as the reward model was trained);
:class:`TokenFractionReward` is a known programmatic reward for tests and smoke runs; any
``package.module:callable`` taking ``(prompts, responses, response_ids)`` can be named in the config.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from instructrl.models.generation import ended_flags
from instructrl.records import PromptText


class RewardFn(Protocol):
    def __call__(
        self,
        prompts: Sequence[PromptText],
        responses: Sequence[str],
        response_ids: Sequence[Sequence[int]],
        finish_reasons: Sequence[str],
    ) -> list[float]: ...


class TokenFractionReward:
    """The fraction of a response's tokens (EOS excluded) that are in ``token_ids``; 0 for an empty one."""

    def __init__(self, token_ids: Sequence[int], eos_ids: Sequence[int] = ()):
        self.token_ids, self.eos_ids = set(token_ids), set(eos_ids)

    def __call__(self, prompts, responses, response_ids, finish_reasons=None) -> list[float]:
        out = []
        for ids in response_ids:
            body = [t for t in ids if t not in self.eos_ids]
            out.append(sum(t in self.token_ids for t in body) / len(body) if body else 0.0)
        return out


class RewardModelReward:
    """Normalized reward-model scores of (prompt, response) pairs.

    ``offload``: the model lives on the CPU and visits ``device`` only while it scores.
    """

    def __init__(
        self,
        rm: torch.nn.Module,
        tok: Any,
        *,
        device: torch.device,
        amp_dtype: torch.dtype,
        batch_size: int,
        max_len: int,
        offload: bool = False,
    ):
        self.rm, self.tok, self.device, self.amp_dtype = rm, tok, device, amp_dtype
        self.batch_size, self.max_len, self.offload = batch_size, max_len, offload

    def __call__(self, prompts, responses, response_ids, finish_reasons) -> list[float]:
        ended = ended_flags(finish_reasons, len(responses))
        if self.offload:
            self.rm.to(self.device)
        try:
            return self.rm.score_texts(
                self.tok,
                list(prompts),
                list(responses),
                max_len=self.max_len,
                batch_size=self.batch_size,
                device=self.device,
                amp_dtype=self.amp_dtype,
                ended=ended,
            )
        finally:
            if self.offload:
                self.rm.to("cpu")


def import_callable(spec: str, key: str) -> Callable:
    """``package.module:callable`` -> the callable, with a clear error naming the config ``key``."""
    if ":" not in spec:
        raise ValueError(f"{key} must look like 'package.module:callable', got {spec!r}")
    module, name = spec.split(":", 1)
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{key} {spec!r} cannot be loaded: {e}") from None
    if not callable(fn):
        raise ValueError(f"{key} {spec!r} is not callable")
    return fn


def load_callable(spec: str) -> RewardFn:
    """A user's ``fn(prompts, responses, response_ids)`` as a reward (the finish reasons are not passed on)."""
    fn = import_callable(spec, "reward.function")
    return lambda prompts, responses, response_ids, finish_reasons: fn(prompts, responses, response_ids)


def single_token_id(tok: Any, text: str) -> int:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(
            f"reward.target_tokens: {text!r} is {len(ids)} tokens ({ids}) for this tokenizer; "
            "choose text that is exactly one token"
        )
    return ids[0]


def build_reward(
    cfg: Any,
    tok: Any,
    *,
    device: torch.device,
    amp_dtype: torch.dtype,
    dtype: torch.dtype,
    offload: bool,
    eos_ids: Sequence[int],
) -> RewardFn:
    """The reward named by a :class:`~instructrl.ppo.config.RewardConfig`."""
    if cfg.kind == "target_tokens":
        return TokenFractionReward([single_token_id(tok, t) for t in cfg.target_tokens], eos_ids)
    if cfg.kind == "function":
        return load_callable(cfg.function)
    if cfg.kind == "factory":
        return import_callable(cfg.factory, "reward.factory")(**cfg.factory_args)
    from instructrl.models.scalar import load_reward_model

    rm, rm_tok = load_reward_model(cfg.model, device="cpu" if offload else device, dtype=dtype)
    rm.requires_grad_(False)
    return RewardModelReward(
        rm,
        rm_tok,
        device=device,
        amp_dtype=amp_dtype,
        batch_size=cfg.batch_size,
        max_len=cfg.max_seq_len,
        offload=offload,
    )
