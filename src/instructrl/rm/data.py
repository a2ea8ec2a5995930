"""Rankings -> per-prompt batch elements of K token sequences, with their comparisons.

One batch element is one prompt: its K responses are K sequences in the forward pass, and all
comparisons of that prompt index into their K scores (see :mod:`instructrl.rm.loss`). A prompt is
tokenized once; each response is ``prompt + response + EOS`` (see
:func:`instructrl.models.scalar.encode_for_reward`; no EOS for a response that
``meta["finish_reasons"]`` marks as cut off, ``"length"``), and one cut of the prompt serves all K
responses (:func:`~instructrl.models.scalar.truncate_group`) so that it can be computed once. The held-out
split is by conversation, so two rankings from one conversation never sit on both sides. Data order is a
pure function of ``(seed, epoch)``, so a resumed run sees exactly the batches an uninterrupted run would
have seen.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from instructrl.models.generation import ended_flags
from instructrl.models.loading import encode_prompt
from instructrl.models.scalar import pad_batch, response_ids, truncate_group
from instructrl.records import Demonstration, Ranking
from instructrl.rm.importers import conversation_key
from instructrl.rm.loss import PairIndex, build_pair_index, ranking_pairs

log = logging.getLogger(__name__)


@dataclass
class RankedExample:
    """One prompt's tokens, its K tokenized responses and their ranks (1 = best, equal = tie)."""

    prompt: list[int]
    responses: list[list[int]]
    ranks: list[int]
    dataset: str = ""
    id: str = ""

    @property
    def k(self) -> int:
        return len(self.responses)

    @property
    def seqs(self) -> list[list[int]]:
        """The K full sequences ``prompt + response``."""
        return [self.prompt + r for r in self.responses]

    @property
    def longest(self) -> int:
        return len(self.prompt) + max(len(r) for r in self.responses)

    @property
    def n_pairs(self) -> int:
        return len(ranking_pairs(self.ranks))


@dataclass
class RMBatch:
    """The sequences of some prompts in two layouts: ``input_ids`` [sum K, T] (each response after its
    prompt, right-padded) and, for computing each prompt once, ``prompt_ids`` [G, P] (left-padded),
    ``response_ids`` [sum K, R] (right-padded) with ``owner`` [sum K] (the prompt of each response)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    owner: torch.Tensor
    pairs: PairIndex
    pair_k: torch.Tensor  # [P] K of the prompt each pair comes from
    pair_dataset: list[str]  # [P]
    n_prompts: int
    n_tokens: int  # tokens of the K full sequences of every prompt
    n_tokens_shared: int  # tokens forwarded when each prompt is computed once


@dataclass
class EncodeStats:
    rankings: int = 0
    truncated: int = 0  # rankings whose prompt or responses were cut to fit max_len
    skipped: Counter = field(default_factory=Counter)


def split_by_conversation(rankings: list[Ranking], eval_fraction: float, salt: str = "") -> tuple[list, list]:
    """Deterministic split: a conversation goes to the held-out side when the hash of
    ``salt + key`` falls below ``eval_fraction``. Stable under reordering and subsetting."""
    if eval_fraction <= 0:
        return list(rankings), []
    train, held = [], []
    for r in rankings:
        h = hashlib.sha256(f"{salt}{conversation_key(r)}".encode()).digest()
        (held if int.from_bytes(h[:8], "big") / 2**64 < eval_fraction else train).append(r)
    return train, held


def encode_rankings(
    tok: Any, rankings: list[Ranking], max_len: int, progress: bool = False
) -> tuple[list[RankedExample], EncodeStats]:
    """Tokenize every ranking (the prompt once, each response once)."""
    from tqdm.auto import tqdm

    stats = EncodeStats()
    out = []
    for r in tqdm(rankings, desc="tokenize rankings", disable=not progress, dynamic_ncols=True):
        if not ranking_pairs(r.ranks):
            stats.skipped["rankings where every response ties"] += 1
            continue
        ended = ended_flags(r.meta.get("finish_reasons"), len(r.responses))
        prompt, responses, cut = truncate_group(
            encode_prompt(tok, r.prompt), [response_ids(tok, resp, e) for resp, e in zip(r.responses, ended)], max_len
        )
        stats.truncated += cut
        out.append(RankedExample(prompt, responses, list(r.ranks), str(r.meta.get("dataset", "")), r.id))
        stats.rankings += 1
    return out, stats


def collate(examples: list[RankedExample], pad_id: int) -> RMBatch:
    seqs = [s for ex in examples for s in ex.seqs]
    ids, mask = pad_batch(seqs, pad_id)
    prompt_ids, prompt_mask = pad_batch([ex.prompt for ex in examples], pad_id, left=True)
    response_ids_, response_mask = pad_batch([r for ex in examples for r in ex.responses], pad_id)
    owner = torch.tensor([g for g, ex in enumerate(examples) for _ in range(ex.k)], dtype=torch.long)
    pairs = build_pair_index([ex.ranks for ex in examples])
    pair_k = torch.tensor([ex.k for ex in examples for _ in range(ex.n_pairs)], dtype=torch.long)
    pair_dataset = [ex.dataset for ex in examples for _ in range(ex.n_pairs)]
    shared = sum(len(ex.prompt) + sum(len(r) for r in ex.responses) for ex in examples)
    return RMBatch(
        ids,
        mask,
        prompt_ids,
        prompt_mask,
        response_ids_,
        response_mask,
        owner,
        pairs,
        pair_k,
        pair_dataset,
        len(examples),
        sum(len(s) for s in seqs),
        shared,
    )


def epoch_batches(
    examples: list[RankedExample], batch_size: int, seed: int, epoch: int, length_grouping: bool = True
) -> list[list[int]]:
    """Indices of the prompts of each optimizer step of ``epoch``.

    With ``length_grouping``, prompts are shuffled, then sorted by length inside windows of 16
    batches and cut into batches whose order is shuffled again: less padding, same data each epoch.
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(examples)))
    rng.shuffle(order)
    if length_grouping:
        window = batch_size * 16
        order = [
            i
            for s in range(0, len(order), window)
            for i in sorted(order[s : s + window], key=lambda j: examples[j].longest)
        ]
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if length_grouping:
        rng.shuffle(batches)
    return batches


def micro_batches(
    indices: list[int], examples: list[RankedExample], micro_batch_size: int
) -> list[list[RankedExample]]:
    """Split one optimizer step's prompts into forward passes of at most ``micro_batch_size`` prompts;
    a prompt's K responses always stay in one forward pass."""
    chosen = [examples[i] for i in indices]
    return [chosen[s : s + micro_batch_size] for s in range(0, len(chosen), micro_batch_size)]


# --------------------------------------------------------------------------- baselines, synthetic data


def length_rule_accuracy(rankings: list[Ranking], longer_wins: bool = True) -> float:
    """Pairwise accuracy of "the longer (or shorter) response wins", by characters; equal lengths
    count half. Over the same comparisons the reward model is scored on."""
    right, total = 0.0, 0
    for r in rankings:
        for winner, loser in ranking_pairs(r.ranks):
            lw, ll = len(r.responses[winner]), len(r.responses[loser])
            total += 1
            if lw == ll:
                right += 0.5
            elif (lw > ll) == longer_wins:
                right += 1
    return right / max(1, total)


def synthetic_rankings(demos: list[Demonstration], k: int, seed: int = 0, max_noise: float = 0.8) -> list[Ranking]:
    """Rankings of K with a known order, from demonstrations: response j (rank j + 1) is the
    demonstration's response with a fraction ``max_noise * j / (K - 1)`` of its words replaced by
    words drawn from other demonstrations' responses. For smoke runs and benchmarks."""
    if k < 2:
        raise ValueError(f"synthetic rankings need K >= 2, got {k}")
    plain = [d for d in demos if d.prompt is not None and d.response]
    pool = [w for d in plain for w in d.response.split()]
    if len(plain) < 2 or not pool:
        raise ValueError("synthetic rankings need at least 2 demonstrations with a prompt and a response")
    rng = random.Random(seed)
    out = []
    for n, d in enumerate(plain):
        words = d.response.split()
        responses = []
        for j in range(k):
            frac = max_noise * j / (k - 1)
            noisy = list(words)
            for pos in rng.sample(range(len(words)), round(frac * len(words))):
                noisy[pos] = rng.choice(pool)
            responses.append(" ".join(noisy))
        if len(set(responses)) < k:  # too short to corrupt into K distinct responses
            continue
        order = list(range(k))
        rng.shuffle(order)  # the best response is not always first
        out.append(
            Ranking(
                prompt=d.prompt,
                responses=[responses[i] for i in order],
                ranks=[i + 1 for i in order],
                id=f"synthetic-{n}",
                meta={"dataset": "synthetic", "conversation": d.id or f"demo-{n}"},
            )
        )
    return out
