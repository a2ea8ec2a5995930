"""Sample responses from a policy into :class:`~instructrl.records.Sample` records, and score the
log-probability of responses under a model.

Used by the evaluation (one response per test prompt and policy) and by ``instructrl run`` (the
base model's candidates for demonstrations, the SFT model's K responses per prompt to rank).
Generation goes through the project's :class:`~instructrl.models.generation.Generator` engines;
log-probs use the same definition as PPO (:func:`instructrl.models.forward.response_logprobs`: logits
divided by the sampling temperature), so a KL measured here matches the one PPO penalizes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from instructrl.models.forward import batched, collate, encode_prompts, response_logprobs
from instructrl.records import Prompt, PromptText, Sample

log = logging.getLogger(__name__)


def load_policy(name_or_path: str, *, device: str = "auto", dtype: str = "fp32") -> tuple[Any, Any, torch.device]:
    """``(model, tokenizer, device)``: a causal LM in eval mode on the resolved device."""
    from instructrl.models.loading import load_model, load_tokenizer
    from instructrl.utils.device import DTYPES, resolve_device

    dev = resolve_device(device)
    tok = load_tokenizer(name_or_path)
    model = load_model(name_or_path, dtype=DTYPES[dtype], dropout=0.0, tokenizer=tok, device=dev)
    return model.eval(), tok, dev


def sample_prompts(
    generator: Any,
    prompts: Sequence[Prompt],
    *,
    n: int = 1,
    policy: str = "",
    inputs: Sequence[PromptText] | None = None,
    max_new_tokens: int = 128,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    autocast_ctx: Any = None,
    keep_token_ids: bool = False,
) -> list[Sample]:
    """``n`` responses per prompt as Sample records (``meta.prompt_id`` links each to its prompt;
    ``logprob`` is the response's log-prob at ``temperature`` where the generator reports it).

    ``inputs`` (one per prompt) is what the model is given instead of the prompt itself, e.g. the
    prompt behind a few-shot prefix; the Sample keeps the prompt as the user wrote it."""
    import contextlib

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    given = list(inputs) if inputs is not None else [p.prompt for p in prompts]
    if len(given) != len(prompts):
        raise ValueError(f"{len(given)} inputs for {len(prompts)} prompts")
    flat = [x for x in given for _ in range(n)]
    with autocast_ctx() if autocast_ctx is not None else contextlib.nullcontext():
        gens = generator.generate(flat, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    out = []
    for i, p in enumerate(prompts):
        for j in range(n):
            g = gens[i * n + j]
            meta: dict[str, Any] = {"prompt_id": p.id, "n_tokens": len(g.token_ids)}
            if keep_token_ids:
                meta["token_ids"] = list(g.token_ids)
            # the sampler's own log-prob of the response, where the engine reports one per token
            lp = float(sum(g.logprobs)) if g.token_ids and len(g.logprobs) == len(g.token_ids) else None
            out.append(
                Sample(
                    prompt=p.prompt,
                    response=g.text,
                    id=f"{p.id}#{j}" if n > 1 else p.id,
                    policy=policy,
                    finish_reason=g.finish_reason,
                    logprob=lp,
                    meta=meta,
                )
            )
    return out


@torch.no_grad()
def sequence_logprobs(
    model: Any,
    tok: Any,
    inputs: Sequence[PromptText],
    response_ids: Sequence[Sequence[int]],
    *,
    temperature: float = 1.0,
    max_prompt_tokens: int | None = None,
    batch_size: int = 8,
    device: torch.device | None = None,
    autocast_ctx: Any = None,
) -> list[float]:
    """Sum of the log-probs of each response's tokens given its input, under ``model`` at
    ``temperature`` (the prompt encoded as the generators encode it)."""
    import contextlib

    keep = [i for i, r in enumerate(response_ids) if len(r) > 0]
    out = [0.0] * len(response_ids)
    if not keep:
        return out
    device = device or next(model.parameters()).device
    prompt_ids = encode_prompts(tok, [inputs[i] for i in keep], max_prompt_tokens)
    batch = collate(prompt_ids, [list(response_ids[i]) for i in keep], tok.pad_token_id)
    with autocast_ctx() if autocast_ctx is not None else contextlib.nullcontext():
        lp = batched(lambda b: response_logprobs(model, b, temperature)[0], batch, batch_size, device)
    sums = (lp * batch.mask).sum(-1).tolist()
    for i, s in zip(keep, sums):
        out[i] = float(s)
    return out
