"""Forward passes at response positions: the one definition of a response's log-probs and LM loss.

SFT's loss, PPO's log-probs (rollout, training, reference), PPO-ptx's pretraining loss and the
evaluation's KL all come from here, so a log-prob means the same thing in every stage. Only the
positions that predict a response token go through the unembedding (a vocabulary x hidden matmul
per token that prompt positions do not need), in fp32 after the final projection.

Conventions: a :class:`Batch` holds ``prompt + response`` sequences right-padded into ``input_ids``
[B, T] and response-aligned tensors [B, R] (``tokens``, ``mask``): response token ``t`` of row ``b``
sits at ``input_ids[b, start[b] + t]`` and is predicted by the hidden state at ``start[b] + t - 1``.
For the LM loss on packed or plain sequences, ``mask[b, t]`` is True where ``input_ids[b, t]`` is
a token to predict.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from instructrl.models.kv import cache_argument, cache_of
from instructrl.models.loading import render_prompt
from instructrl.records import PromptText

# --------------------------------------------------------------------------- per-token quantities


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability of ``tokens`` [...] under ``logits`` [..., V], in fp32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy [...] of each distribution given by ``logits`` [..., V], in fp32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


# --------------------------------------------------------------------------- LM loss (SFT, PPO-ptx)


def shifted_targets(input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions [B, T-1] bool whose hidden state predicts a trained token, those target ids [N])."""
    sel = mask[:, 1:].bool()
    return sel, input_ids[:, 1:][sel]


def nll_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed negative log-likelihood of ``targets`` [N] under ``logits`` [N, V], computed in fp32."""
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def masked_lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Reference form on full logits [B, T, V]: (summed NLL over masked tokens, number of tokens)."""
    sel, targets = shifted_targets(input_ids, mask)
    return nll_sum(logits[:, :-1][sel], targets), int(sel.sum())


def response_lm_loss(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    mask: torch.Tensor,
    position_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Same value as :func:`masked_lm_loss`, projecting only the response positions through the LM head.

    The unembedding is a large matmul (vocabulary x hidden) per token; prompt tokens need none.
    """
    decoder = model.get_decoder()
    hidden = decoder(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    sel, targets = shifted_targets(input_ids, mask)
    logits = model.get_output_embeddings()(hidden[:, :-1][sel])
    return nll_sum(logits, targets), int(sel.sum())


class ResponseLMLoss(torch.nn.Module):
    """:func:`response_lm_loss` as a module over ``model``'s parameters, so that a data-parallel wrapper
    (DDP) runs it as its forward and exchanges the gradients of its backward."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, int]:
        return response_lm_loss(self.model, input_ids, attention_mask, mask, position_ids)


# --------------------------------------------------------------------------- prompt + response batches


def encode_prompts(tok: Any, prompts: Sequence[PromptText], max_prompt_tokens: int | None) -> list[list[int]]:
    """Token ids of each prompt as the generators encode it (chat template with the generation
    prompt; longer prompts keep their last ``max_prompt_tokens`` tokens)."""
    out = []
    for p in prompts:
        ids = tok(render_prompt(tok, p), add_special_tokens=False)["input_ids"]
        out.append(ids[-max_prompt_tokens:] if max_prompt_tokens and len(ids) > max_prompt_tokens else ids)
    return out


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
        return Batch(
            self.input_ids[idx, :width],
            self.attention_mask[idx, :width],
            self.start[idx],
            self.tokens[idx, :r],
            self.mask[idx, :r],
        )

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


def gather_positions(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))


def response_logprobs(
    model: torch.nn.Module, batch: Batch, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[B, R] log-probs of the response tokens under ``model`` (logits divided by ``temperature``),
    and their entropies (no gradient) when ``with_entropy``. Padding positions hold junk: mask them."""
    hidden = model.get_decoder()(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
    ).last_hidden_state
    logits = model.get_output_embeddings()(gather_positions(hidden, batch.positions()))
    if temperature != 1.0:
        logits = logits / temperature
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = entropy_from_logits(logits.detach())
    return token_logprobs(logits, batch.tokens), entropy


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


# --------------------------------------------------------------------------- continuations of one context


def encode_continuations(tok: Any, context: str, continuations: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """Token ids of ``context`` and of each continuation after it, split as lm-evaluation-harness
    splits them (``HFLM._encode_pair``): spaces that end the context move to the front of every
    continuation; ``context + continuation`` is encoded whole, and the continuation is what follows
    the context's own tokens, so a word is tokenized as it is in the joined text. No special tokens
    are added. An empty context becomes the EOS token (the first continuation token needs a token to
    be predicted from), and each continuation is then encoded on its own."""
    spaces = len(context) - len(context.rstrip(" "))
    if spaces:
        continuations = [context[-spaces:] + c for c in continuations]
        context = context[:-spaces]
    ctx_ids = tok(context, add_special_tokens=False)["input_ids"] if context else []
    out = []
    for c in continuations:
        ids = tok(context + c, add_special_tokens=False)["input_ids"][len(ctx_ids) :]
        if not ids:
            raise ValueError(f"the continuation {c!r} adds no token to its context")
        out.append(ids)
    return (ctx_ids or [tok.eos_token_id]), out


def _prefix_cache(model: torch.nn.Module, prefix: Sequence[int], device: torch.device) -> Any:
    """Keys and values of ``prefix`` (one row), copied into every batch whose contexts start with it."""
    decoder = model.get_decoder()
    out = decoder(input_ids=torch.tensor([list(prefix)], device=device), use_cache=True)
    return cache_of(out)


def _packed_batch(
    model: torch.nn.Module,
    contexts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[Sequence[int]]],
    pad_id: int,
    device: torch.device,
    prefix: tuple[int, Any] | None = None,
) -> list[list[list[float]]]:
    """One forward pass of G rows, row g = context g followed by all of its continuations; see
    :func:`shared_context_logprobs`. A 4D attention mask lets each continuation token see the
    context and the earlier tokens of its own continuation only, and position ids restart after the
    context for every continuation, so each continuation is computed exactly as if it followed the
    context alone. ``prefix = (length, cache)``: every context starts with those tokens (removed from
    ``contexts``), whose cached keys and values come first for every row."""
    shared = prefix[0] if prefix is not None else 0
    rows: list[list[int]] = []
    spans: list[list[tuple[int, int]]] = []  # per row, (start, length) of each continuation
    for ctx, conts in zip(contexts, continuations):
        ids, row_spans = list(ctx), []
        for c in conts:
            row_spans.append((len(ids), len(c)))
            ids += list(c)
        rows.append(ids)
        spans.append(row_spans)
    n, width = len(rows), max(len(r) for r in rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    segment = torch.full((n, width), -1, dtype=torch.long)  # 0: context, i + 1: continuation i, -1: padding
    pred_row, pred_pos, targets = [], [], []
    for g, (ids, ctx, row_spans) in enumerate(zip(rows, contexts, spans)):
        input_ids[g, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        positions[g, : len(ctx)] = torch.arange(shared, shared + len(ctx))
        segment[g, : len(ctx)] = 0
        for i, (start, length) in enumerate(row_spans):
            positions[g, start : start + length] = torch.arange(shared + len(ctx), shared + len(ctx) + length)
            segment[g, start : start + length] = i + 1
            # token 0 is predicted by the context's last token, token t by token t - 1
            pred_row += [g] * length
            pred_pos += [len(ctx) - 1] + list(range(start, start + length - 1))
            targets += ids[start : start + length]
    query, key = segment[:, :, None], segment[:, None, :]
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    allowed = causal & (key >= 0) & (query >= 0) & ((key == 0) | (key == query))
    allowed |= torch.eye(width, dtype=torch.bool)  # a padding row sees itself: no row is fully masked
    if shared:
        allowed = torch.cat([torch.ones((n, width, shared), dtype=torch.bool), allowed], dim=-1)
    decoder = model.get_decoder()
    implementation = getattr(model.config, "_attn_implementation", "sdpa")
    if implementation == "sdpa":
        mask = allowed[:, None].to(device)  # True takes part, as torch's scaled_dot_product_attention reads it
    elif implementation == "eager":
        dtype = next(model.parameters()).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None].to(device)
    else:
        raise ValueError(
            f"multiple-choice log-likelihoods need an attention that takes a 4D mask (sdpa or eager), "
            f"not {implementation!r}; load the model with attn_implementation='sdpa'"
        )
    kwargs: dict[str, Any] = {}
    if prefix is not None:
        cache = copy.deepcopy(prefix[1])
        cache.reorder_cache(torch.zeros(n, dtype=torch.long, device=device))  # the prefix once per row
        kwargs = {cache_argument(decoder): cache, "use_cache": True}
    hidden = decoder(
        input_ids=input_ids.to(device), attention_mask=mask, position_ids=positions.to(device), **kwargs
    ).last_hidden_state
    rows_t, pos_t = torch.tensor(pred_row, device=device), torch.tensor(pred_pos, device=device)
    logits = model.get_output_embeddings()(hidden[rows_t, pos_t])
    flat = token_logprobs(logits, torch.tensor(targets, device=device)).float().cpu().tolist()
    out, at = [], 0
    for row_spans in spans:
        out.append([])
        for _, length in row_spans:
            out[-1].append(flat[at : at + length])
            at += length
    return out


@torch.no_grad()
def shared_context_logprobs(
    model: torch.nn.Module,
    groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    pad_id: int = 0,
    device: torch.device | None = None,
    progress: bool = False,
    min_shared_prefix: int = 16,
) -> list[list[list[float]]]:
    """Per-token log-probs of several continuations of each context, each context forwarded once.

    ``groups[g] = (context_ids, [continuation_ids, ...])``; returns ``out[g][c][t]``, the log-prob of
    token ``t`` of continuation ``c`` after context ``g`` (fp32). The same values as one forward pass
    of ``context + continuation`` per pair, with each context's tokens computed once for all of its
    continuations (as the reward model does for K responses): a context and all of its continuations
    are one packed row, and a 4D attention mask with per-continuation position ids keeps the
    continuations from seeing each other (so no key/value cache is copied per continuation). Only the
    positions that predict a continuation token go through the unembedding. Groups are sorted by
    length and packed into forward passes of at most ``batch_size`` continuations (a group with more
    runs alone). When all contexts start with the same ``min_shared_prefix`` tokens or more (a
    few-shot prompt, a primer), those are forwarded once for the whole call and their keys and values
    put before every row. ``max_length``: contexts lose tokens from the left so that context plus
    longest continuation fits. The model's attention must take a 4D mask (sdpa, eager).
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = device or next(model.parameters()).device
    prepared = []
    for g, (ctx, conts) in enumerate(groups):
        if not conts or any(len(c) == 0 for c in conts):
            raise ValueError(f"group {g}: every context needs continuations of at least one token")
        ctx = list(ctx)
        longest = max(len(c) for c in conts)
        if max_length is not None:
            if longest >= max_length:
                raise ValueError(f"group {g}: a continuation of {longest} tokens leaves no room within {max_length}")
            ctx = ctx[-(max_length - longest) :]
        if not ctx:
            raise ValueError(f"group {g}: the context has no token")
        prepared.append((ctx, [list(c) for c in conts], len(ctx) + longest))
    # tokens every context starts with (a few-shot prompt, a primer) are computed once for the call;
    # each context keeps at least its last token, whose hidden state predicts the continuations
    shared = min(len(p[0]) for p in prepared) - 1
    for p in prepared[1:]:
        shared = next((i for i in range(shared) if p[0][i] != prepared[0][0][i]), shared)
    prefix = None
    if shared >= min_shared_prefix:
        prefix = (shared, _prefix_cache(model, prepared[0][0][:shared], device))
        prepared = [(ctx[shared:], conts, size) for ctx, conts, size in prepared]
    order = sorted(range(len(prepared)), key=lambda g: -prepared[g][2])
    batches: list[list[int]] = []
    rows = 0
    for g in order:
        n = len(prepared[g][1])
        if batches and rows + n <= batch_size:
            batches[-1].append(g)
            rows += n
        else:
            batches.append([g])
            rows = n
    out: list[list[list[float]]] = [[] for _ in prepared]
    was_training = model.training
    model.eval()
    try:
        for idx in tqdm(batches, desc="loglikelihood", unit="batch", disable=not progress or len(batches) < 2):
            result = _packed_batch(
                model, [prepared[g][0] for g in idx], [prepared[g][1] for g in idx], pad_id, device, prefix
            )
            for g, r in zip(idx, result):
                out[g] = r
    finally:
        model.train(was_training)
    return out


def loglikelihoods(
    model: torch.nn.Module, tok: Any, context: str, continuations: Sequence[str], **kwargs: Any
) -> list[float]:
    """Summed log-likelihood of each continuation after ``context`` (tokenized as
    :func:`encode_continuations` does; ``kwargs`` go to :func:`shared_context_logprobs`)."""
    ctx, conts = encode_continuations(tok, context, continuations)
    kwargs.setdefault("pad_id", tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    (per_token,) = shared_context_logprobs(model, [(ctx, conts)], **kwargs)
    return [float(sum(t)) for t in per_token]
