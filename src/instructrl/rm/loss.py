"""The reward model's K-way ranking loss, as InstructGPT trained it. Pure torch, no model code.

A ranking of K responses to one prompt (rank 1 is best; equal ranks are ties) yields every pair
``(w, l)`` with ``rank[w] < rank[l]``; tied pairs yield no comparison. All comparisons of one prompt
form one batch element:

    loss(prompt) = -1/P · Σ_{(w, l)} log σ(r_w - r_l)

where P is the number of comparisons formed, i.e. C(K, 2) when there are no ties. The batch loss is
the mean over prompts, so a prompt weighs the same whatever its K (the paper's point: a prompt's
C(K, 2) pairs treated as independent examples overfit).

The K scores of a prompt come from one forward pass over its K sequences; the pairs index into
the flat vector of scores of the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def ranking_pairs(ranks: list[int]) -> list[tuple[int, int]]:
    """All ``(winner, loser)`` index pairs of a ranking (lower rank wins); ties give no pair."""
    pairs = []
    for i in range(len(ranks)):
        for j in range(i + 1, len(ranks)):
            if ranks[i] < ranks[j]:
                pairs.append((i, j))
            elif ranks[j] < ranks[i]:
                pairs.append((j, i))
    return pairs


@dataclass
class PairIndex:
    """Comparisons of a batch: ``scores[win[p]]`` should beat ``scores[lose[p]]``; pair p belongs to
    prompt ``group[p]`` (0..num_groups-1)."""

    win: torch.Tensor  # [P] long
    lose: torch.Tensor  # [P] long
    group: torch.Tensor  # [P] long
    num_groups: int

    def to(self, device: torch.device | str) -> PairIndex:
        return PairIndex(self.win.to(device), self.lose.to(device), self.group.to(device), self.num_groups)


def build_pair_index(rankings: list[list[int]]) -> PairIndex:
    """Pairs of several rankings whose responses are laid out one after another in a flat batch."""
    win, lose, group = [], [], []
    offset = 0
    for g, ranks in enumerate(rankings):
        for winner, loser in ranking_pairs(ranks):
            win.append(offset + winner)
            lose.append(offset + loser)
            group.append(g)
        offset += len(ranks)
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return PairIndex(as_long(win), as_long(lose), as_long(group), len(rankings))


def per_prompt_loss(scores: torch.Tensor, pairs: PairIndex) -> torch.Tensor:
    """[num_groups] loss of each prompt: -mean over its comparisons of log σ(r_w - r_l).

    A prompt without comparisons (all responses tied) gets 0.
    """
    logp = F.logsigmoid(scores[pairs.win].float() - scores[pairs.lose].float())
    total = torch.zeros(pairs.num_groups, dtype=logp.dtype, device=logp.device).index_add(0, pairs.group, logp)
    count = torch.zeros(pairs.num_groups, dtype=logp.dtype, device=logp.device).index_add(
        0, pairs.group, torch.ones_like(logp)
    )
    return -total / count.clamp(min=1)


def kway_loss(scores: torch.Tensor, pairs: PairIndex, num_prompts: int | None = None) -> torch.Tensor:
    """Batch loss: sum of the per-prompt losses divided by ``num_prompts`` (default: the prompts of
    this batch). Pass the prompt count of the whole optimizer step when it is split into micro-batches,
    so that every prompt weighs the same however the step is split."""
    losses = per_prompt_loss(scores, pairs)
    return losses.sum() / (num_prompts if num_prompts is not None else max(1, pairs.num_groups))


def pair_stats(scores: torch.Tensor, pairs: PairIndex) -> dict[str, torch.Tensor]:
    """Per-pair ``correct`` (r_w > r_l; an exact tie counts as wrong) and ``margin`` (r_w - r_l)."""
    margin = scores[pairs.win].float() - scores[pairs.lose].float()
    return {"correct": (margin > 0).float(), "margin": margin}
