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

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

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
