"""SFT loss: negative log-likelihood of the response tokens, token mean.

``mask[b, t]`` is True where token ``input_ids[b, t]`` is a response token to predict (from the
hidden state at ``t - 1``). The training loop normalizes by the number of response tokens in the
whole optimizer step (all micro-batches), so every response token weighs the same however the
batch is split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def response_lm_loss(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                     mask: torch.Tensor, position_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Same value as :func:`masked_lm_loss`, projecting only the response positions through the LM head.

    The unembedding is a large matmul (vocabulary x hidden) per token; prompt tokens need none.
    """
    decoder = model.get_decoder()
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     use_cache=False).last_hidden_state
    sel, targets = shifted_targets(input_ids, mask)
    logits = model.get_output_embeddings()(hidden[:, :-1][sel])
    return nll_sum(logits, targets), int(sel.sum())
