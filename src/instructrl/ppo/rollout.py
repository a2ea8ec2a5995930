"""Rollouts: sample a response per prompt, then gather what PPO needs about each response token.

The batch layout and log-probs are :mod:`instructrl.models.forward`'s: the same
:func:`~instructrl.models.forward.response_logprobs` computes the rollout's log-probs and the
training epochs' ones, so before any update their ratio is 1 (a test checks it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from instructrl.builtin import resolve
from instructrl.models.forward import Batch, batched, collate, gather_positions, response_logprobs
from instructrl.records import PromptText, RecordError, check_messages, iter_json_lines
from instructrl.utils.seed import derive

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- prompts


def load_prompts(specs: Sequence[str], max_prompts: int | None = None) -> list[PromptText]:
    """Prompts from JSONL files: objects with ``prompt`` (text or chat messages ending with a user
    turn) or ``text``, or JSON strings. Few-shot demonstrations (no ``prompt``) are skipped."""
    prompts: list[PromptText] = []
    skipped = 0
    for spec in specs:
        path = resolve(spec)
        for lineno, obj in iter_json_lines(path):
            where = f"{path}:{lineno}"
            if isinstance(obj, str):
                value: Any = obj
                field = None
            elif isinstance(obj, dict):
                if "prompt" not in obj and "instruction" in obj and "examples" in obj:
                    skipped += 1
                    continue
                field = "text" if "text" in obj and "prompt" not in obj else "prompt"
                value = obj.get(field)
            else:
                raise RecordError(where, None, "expected an object with 'prompt' (or 'text'), or a string")
            if isinstance(value, list):
                try:
                    check_messages(value, field or "prompt", final_role="user")
                except ValueError as e:
                    raise RecordError(where, field, str(e)) from None
            elif not isinstance(value, str) or not value.strip():
                raise RecordError(where, field or "prompt", "missing or empty (expected text or chat messages)")
            prompts.append(value)
            if max_prompts is not None and len(prompts) >= max_prompts:
                return prompts
    if skipped:
        log.info("ppo: skipped %d few-shot demonstrations (they have no single prompt)", skipped)
    if not prompts:
        raise RecordError(
            ", ".join(map(str, specs)),
            None,
            "no prompts in the file (it is empty, blank or holds only "
            "few-shot demonstrations); expected one JSON object with 'prompt' per line",
        )
    return prompts


def prompt_batch(n_prompts: int, step: int, batch_size: int, seed: int, repeat: int = 1) -> list[int]:
    """Indices of the prompts of PPO iteration ``step``: consecutive slices of a permutation that is
    drawn anew (from ``seed`` and the pass number) for every pass over the prompts. With ``repeat``
    k, ``batch_size / k`` prompts, each listed k times in a row (k samples per prompt)."""
    if repeat > 1:
        if batch_size % repeat:
            raise ValueError(f"batch_size {batch_size} is not a multiple of {repeat} samples per prompt")
        return [i for i in prompt_batch(n_prompts, step, batch_size // repeat, seed) for _ in range(repeat)]
    perms: dict[int, list[int]] = {}
    out = []
    for i in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(i, n_prompts)
        if epoch not in perms:
            g = torch.Generator().manual_seed(derive(seed, "prompt order", epoch))
            perms[epoch] = torch.randperm(n_prompts, generator=g).tolist()
        out.append(perms[epoch][pos])
    return out


# --------------------------------------------------------------------------- values


def value_predictions(value_model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """[B, R] values of the states before each response token: the scalar head of a reward-model
    shaped :class:`~instructrl.models.scalar.ScalarRewardModel` at every predicting position (fp32)."""
    out = value_model.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    h = gather_positions(hidden, batch.positions())
    head = value_model.head
    ctx = (
        torch.autocast(device_type=h.device.type, enabled=False)
        if torch.is_autocast_enabled(h.device.type)
        else contextlib.nullcontext()
    )
    with ctx:
        return head(h.to(next(head.parameters()).dtype)).squeeze(-1).float()


# --------------------------------------------------------------------------- rollout


@dataclasses.dataclass
class Rollout:
    prompts: list[PromptText]
    responses: list[str]
    finish_reasons: list[str]
    batch: Batch
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor  # [B] raw scores from the reward
    timings: dict[str, float]


def collect(
    prompts: list[PromptText],
    prompt_ids: list[list[int]],
    *,
    generator: Any,
    policy: torch.nn.Module,
    reference: Callable[[Batch], torch.Tensor],
    value_model: torch.nn.Module | None,
    reward: Callable,
    pad_id: int,
    device: torch.device,
    autocast_ctx: Callable[[], Any],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    forward_batch_size: int,
) -> Rollout:
    """Sample one response per prompt and gather log-probs, reference log-probs, values (zero without
    a value model) and scores. A prompt listed k times gets k independent samples."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    policy.eval()
    with autocast_ctx():
        gens = generator.generate(
            prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
        )
    timings["generate"] = time.perf_counter() - t
    response_ids = [g.token_ids for g in gens]
    for i, ids in enumerate(response_ids):
        if not ids:
            raise RuntimeError(
                f"the generator returned no tokens for prompt {i}; PPO needs token ids "
                "(use rollout.engine 'cached' or 'hf')"
            )
    batch = collate(prompt_ids, response_ids, pad_id)

    t = time.perf_counter()
    scores = torch.tensor(
        reward(prompts, [g.text for g in gens], response_ids, [g.finish_reason for g in gens]), dtype=torch.float32
    )
    timings["score"] = time.perf_counter() - t
    if scores.shape != (len(prompts),):
        raise ValueError(f"the reward returned {tuple(scores.shape)} scores for {len(prompts)} responses")

    t = time.perf_counter()
    with autocast_ctx():
        logprobs = batched(lambda b: response_logprobs(policy, b, temperature)[0], batch, forward_batch_size, device)
        ref_logprobs = reference(batch)
        if value_model is not None:
            values = batched(lambda b: value_predictions(value_model, b), batch, forward_batch_size, device)
        else:
            values = torch.zeros_like(logprobs)
    timings["forward"] = time.perf_counter() - t
    return Rollout(
        list(prompts),
        [g.text for g in gens],
        [g.finish_reason for g in gens],
        batch,
        logprobs,
        ref_logprobs,
        values,
        scores,
        timings,
    )


def make_reference(
    policy: torch.nn.Module,
    ref_model: torch.nn.Module | None,
    temperature: float,
    *,
    frozen_device: torch.device,
    offload: bool,
    chunk: int,
) -> Callable[[Batch], torch.Tensor]:
    """Full-batch log-probs under the frozen reference: the policy with its LoRA adapters disabled
    when ``ref_model`` is None, else ``ref_model`` on ``frozen_device`` (moved there for the call and
    back to the CPU afterwards when ``offload``)."""
    if ref_model is None:

        def lora_ref(b: Batch) -> torch.Tensor:
            with policy.disable_adapter():
                return response_logprobs(policy, b, temperature)[0]

        return lambda batch: batched(lora_ref, batch, chunk, next(policy.parameters()).device)

    def separate_ref(batch: Batch) -> torch.Tensor:
        if offload:
            ref_model.to(frozen_device)
        try:
            return batched(lambda b: response_logprobs(ref_model, b, temperature)[0], batch, chunk, frozen_device)
        finally:
            if offload:
                ref_model.to("cpu")

    return separate_ref
