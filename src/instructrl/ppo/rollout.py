"""Rollouts: sample a response per prompt, then gather what PPO needs about each response token.

A rollout batch holds ``prompt + response`` sequences right-padded into ``input_ids`` [B, T] and
response-aligned tensors [B, R] (``tokens``, ``mask``): response token ``t`` of row ``b`` sits at
``input_ids[b, start[b] + t]`` and is predicted by the hidden state at ``start[b] + t - 1``. Only
those positions go through the unembedding (prompt positions need none), in fp32 after the
final projection. The same :func:`policy_logprobs` computes the rollout's log-probs and the
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

from instructrl.models.loading import render_prompt
from instructrl.ppo.loss import entropy_from_logits, token_logprobs
from instructrl.records import PromptText, RecordError, check_messages, iter_json_lines

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- prompts


def load_prompts(specs: Sequence[str], max_prompts: int | None = None) -> list[PromptText]:
    """Prompts from JSONL files: objects with ``prompt`` (text or chat messages ending with a user
    turn) or ``text``, or JSON strings. Few-shot demonstrations (no ``prompt``) are skipped."""
    from instructrl.sft.data import resolve_data_path

    prompts: list[PromptText] = []
    skipped = 0
    for spec in specs:
        path = resolve_data_path(spec)
        for lineno, obj in iter_json_lines(path):
            where = f"{path}:{lineno}"
            if isinstance(obj, str):
                value: Any = obj
                field = None
            elif isinstance(obj, dict):
                if "prompt" not in obj and "instruction" in obj and "examples" in obj:
                    skipped += 1
                    continue
                field = "prompt" if "prompt" in obj else "text"
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
        raise ValueError(f"no prompts in {list(specs)}")
    return prompts


def encode_prompts(tok: Any, prompts: Sequence[PromptText], max_prompt_tokens: int | None) -> list[list[int]]:
    """Token ids of each prompt as the generators encode it (chat template with the generation
    prompt; longer prompts keep their last ``max_prompt_tokens`` tokens)."""
    out = []
    for p in prompts:
        ids = tok(render_prompt(tok, p), add_special_tokens=False)["input_ids"]
        out.append(ids[-max_prompt_tokens:] if max_prompt_tokens and len(ids) > max_prompt_tokens else ids)
    return out


def prompt_batch(n_prompts: int, step: int, batch_size: int, seed: int) -> list[int]:
    """Indices of the prompts of PPO iteration ``step``: consecutive slices of a permutation that is
    drawn anew (from ``seed`` and the pass number) for every pass over the prompts."""
    perms: dict[int, list[int]] = {}
    out = []
    for i in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(i, n_prompts)
        if epoch not in perms:
            g = torch.Generator().manual_seed(seed * 7919 + epoch)
            perms[epoch] = torch.randperm(n_prompts, generator=g).tolist()
        out.append(perms[epoch][pos])
    return out


# --------------------------------------------------------------------------- batches


@dataclasses.dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T] prompt + response, right-padded
    attention_mask: torch.Tensor  # [B, T]
    start: torch.Tensor  # [B] prompt length = index of the first response token
    tokens: torch.Tensor  # [B, R] response tokens
    mask: torch.Tensor  # [B, R] True at real response tokens

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, idx: torch.Tensor | Sequence[int]) -> Batch:
        """Rows ``idx``, cropped to their own longest sequence and response."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        lengths = self.mask[idx].sum(-1)
        width = int((self.start[idx] + lengths).max())
        r = int(lengths.max())
        return Batch(self.input_ids[idx, :width], self.attention_mask[idx, :width], self.start[idx],
                     self.tokens[idx, :r], self.mask[idx, :r])

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device) for t in dataclasses.astuple(self)))

    def positions(self) -> torch.Tensor:
        """[B, R] index of the hidden state that predicts each response token."""
        r = torch.arange(self.tokens.shape[1], device=self.start.device)
        return (self.start[:, None] - 1 + r[None, :]).clamp(0, self.input_ids.shape[1] - 1)


def collate(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_id: int) -> Batch:
    if any(len(r) == 0 for r in response_ids):
        raise ValueError("every response needs at least one token")
    seqs = [list(p) + list(r) for p, r in zip(prompt_ids, response_ids)]
    width, r_width = max(len(s) for s in seqs), max(len(r) for r in response_ids)
    n = len(seqs)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    tokens = torch.full((n, r_width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, r_width), dtype=torch.bool)
    for i, (s, r) in enumerate(zip(seqs, response_ids)):
        input_ids[i, : len(s)] = torch.tensor(s)
        attention[i, : len(s)] = 1
        tokens[i, : len(r)] = torch.tensor(list(r))
        mask[i, : len(r)] = True
    start = torch.tensor([len(p) for p in prompt_ids], dtype=torch.long)
    return Batch(input_ids, attention, start, tokens, mask)


def _gather(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))


def policy_logprobs(model: torch.nn.Module, batch: Batch, temperature: float = 1.0,
                    with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[B, R] log-probs of the response tokens under ``model`` (logits divided by ``temperature``),
    and their entropies (no gradient) when ``with_entropy``. Padding positions hold junk: mask them."""
    hidden = model.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                 use_cache=False).last_hidden_state
    logits = model.get_output_embeddings()(_gather(hidden, batch.positions()))
    if temperature != 1.0:
        logits = logits / temperature
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = entropy_from_logits(logits.detach())
    return token_logprobs(logits, batch.tokens), entropy


def value_predictions(value_model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """[B, R] values of the states before each response token: the scalar head of a reward-model
    shaped :class:`~instructrl.models.scalar.ScalarRewardModel` at every predicting position (fp32)."""
    out = value_model.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    h = _gather(hidden, batch.positions())
    head = value_model.head
    ctx = (torch.autocast(device_type=h.device.type, enabled=False) if torch.is_autocast_enabled(h.device.type)
           else contextlib.nullcontext())
    with ctx:
        return head(h.to(next(head.parameters()).dtype)).squeeze(-1).float()


@torch.no_grad()
def batched(fn: Callable[[Batch], torch.Tensor], batch: Batch, size: int, device: torch.device) -> torch.Tensor:
    """``fn`` over chunks of ``size`` rows of similar length (less padding); rows in the input order."""
    order = torch.argsort(batch.start + batch.mask.sum(-1), descending=True)
    out = torch.zeros(batch.tokens.shape, dtype=torch.float32)
    for s in range(0, len(batch), size):
        idx = order[s : s + size]
        sub = batch.select(idx)
        out[idx, : sub.tokens.shape[1]] = fn(sub.to(device)).float().cpu()
    return out


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


def collect(prompts: list[PromptText], prompt_ids: list[list[int]], *, generator: Any, policy: torch.nn.Module,
            reference: Callable[[Batch], torch.Tensor], value_model: torch.nn.Module, reward: Callable,
            pad_id: int, device: torch.device, amp_ctx: Callable[[], Any], max_new_tokens: int, temperature: float,
            top_p: float, seed: int, forward_batch_size: int) -> Rollout:
    """Sample one response per prompt and gather log-probs, reference log-probs, values and scores."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    policy.eval()
    with amp_ctx():
        gens = generator.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                  seed=seed)
    timings["generate"] = time.perf_counter() - t
    response_ids = [g.token_ids for g in gens]
    for i, ids in enumerate(response_ids):
        if not ids:
            raise RuntimeError(f"the generator returned no tokens for prompt {i}; PPO needs token ids "
                               "(use rollout.engine 'cached' or 'hf')")
    batch = collate(prompt_ids, response_ids, pad_id)

    t = time.perf_counter()
    scores = torch.tensor(reward(prompts, [g.text for g in gens], response_ids), dtype=torch.float32)
    timings["score"] = time.perf_counter() - t
    if scores.shape != (len(prompts),):
        raise ValueError(f"the reward returned {tuple(scores.shape)} scores for {len(prompts)} responses")

    t = time.perf_counter()
    with amp_ctx():
        logprobs = batched(lambda b: policy_logprobs(policy, b, temperature)[0], batch, forward_batch_size, device)
        ref_logprobs = reference(batch)
        values = batched(lambda b: value_predictions(value_model, b), batch, forward_batch_size, device)
    timings["forward"] = time.perf_counter() - t
    return Rollout(list(prompts), [g.text for g in gens], [g.finish_reason for g in gens], batch, logprobs,
                   ref_logprobs, values, scores, timings)


def make_reference(policy: torch.nn.Module, ref_model: torch.nn.Module | None, temperature: float, *,
                   frozen_device: torch.device, offload: bool, chunk: int) -> Callable[[Batch], torch.Tensor]:
    """Full-batch log-probs under the frozen reference: the policy with its LoRA adapters disabled
    when ``ref_model`` is None, else ``ref_model`` on ``frozen_device`` (moved there for the call and
    back to the CPU afterwards when ``offload``)."""
    if ref_model is None:
        def lora_ref(b: Batch) -> torch.Tensor:
            with policy.disable_adapter():
                return policy_logprobs(policy, b, temperature)[0]
        return lambda batch: batched(lora_ref, batch, chunk, next(policy.parameters()).device)

    def separate_ref(batch: Batch) -> torch.Tensor:
        if offload:
            ref_model.to(frozen_device)
        try:
            return batched(lambda b: policy_logprobs(ref_model, b, temperature)[0], batch, chunk, frozen_device)
        finally:
            if offload:
                ref_model.to("cpu")
    return separate_ref
