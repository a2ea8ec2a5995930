"""Demonstrations -> token ids with a response mask -> length-grouped (or packed) batches.

Data order is a pure function of ``(seed, epoch)``, so a resumed run sees exactly the batches an
uninterrupted run would have seen from the same position.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from typing import Any

import torch

from instructrl.models.loading import encode_chat
from instructrl.records import Demonstration, prompt_messages

log = logging.getLogger(__name__)


def user_split(items: list, valid_fraction: float, seed: int, key=lambda d: d.user_id) -> tuple[list, list]:
    """Hold out about ``valid_fraction`` of the user ids (seeded hash), never splitting a user."""
    if valid_fraction <= 0:
        return list(items), []
    users = sorted({key(d) or f"#{i}" for i, d in enumerate(items)})
    ranked = sorted(users, key=lambda u: hashlib.sha256(f"{seed}:{u}".encode()).hexdigest())
    n_valid = max(1, round(valid_fraction * len(users))) if len(users) > 1 else 0
    held = set(ranked[:n_valid])
    train = [d for i, d in enumerate(items) if (key(d) or f"#{i}") not in held]
    valid = [d for i, d in enumerate(items) if (key(d) or f"#{i}") in held]
    return train, valid


FEW_SHOT_FORMAT = "{instruction}\n\n{shots}Input: {query}\nOutput:"


def expand_few_shot(demo: Demonstration, variants: int, k: int, rng: random.Random) -> list[tuple[str, str]]:
    """(prompt, response) training points from a few-shot demonstration.

    Each example in turn is the query; the shots are a random subset of at most ``k`` of the other
    examples, drawn ``variants`` times (distinct subsets where there are enough), as InstructGPT
    built SFT data from labelers' few-shot prompts.
    """
    exs = demo.examples or []
    points = []
    for i, target in enumerate(exs):
        others = [e for j, e in enumerate(exs) if j != i]
        n = min(k, len(others))
        seen: set[tuple[int, ...]] = set()
        for _ in range(variants * 4):
            if len(seen) >= variants:
                break
            idx = tuple(sorted(rng.sample(range(len(others)), n)))
            if idx in seen:
                continue
            seen.add(idx)
            order = list(idx)
            rng.shuffle(order)
            shots = "".join(f"Input: {others[j]['query']}\nOutput: {others[j]['response']}\n\n" for j in order)
            prompt = FEW_SHOT_FORMAT.format(instruction=demo.instruction, shots=shots, query=target["query"])
            points.append((prompt, target["response"]))
    return points


def to_conversations(demos: list[Demonstration], variants: int, k: int, seed: int) -> list[list[dict]]:
    """Every demonstration as a chat ending with the assistant response (few-shot ones expanded)."""
    rng = random.Random(seed)
    convs = []
    for d in demos:
        if d.examples:
            for prompt, response in expand_few_shot(d, variants, k, rng):
                convs.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}])
        else:
            convs.append(prompt_messages(d.prompt) + [{"role": "assistant", "content": d.response}])
    return convs


@dataclass
class Example:
    input_ids: list[int]
    mask: list[bool]  # True where the token is trained


def tokenize(tok: Any, convs: list[list[dict]], max_len: int, train_on: str = "last") -> tuple[list[Example], int]:
    """Encode conversations; over-long ones lose prompt tokens from the left, then response tokens
    from the right. Returns the examples and how many were truncated."""
    out, truncated = [], 0
    for conv in convs:
        ids, mask = encode_chat(tok, conv, train_on=train_on)
        if len(ids) > max_len:
            truncated += 1
            first = mask.index(True) if True in mask else len(ids)
            drop = min(len(ids) - max_len, first)
            ids, mask = ids[drop:], mask[drop:]
            ids, mask = ids[:max_len], mask[:max_len]
        if any(mask):
            out.append(Example(ids, mask))
    return out, truncated


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    mask: torch.Tensor
    position_ids: torch.Tensor | None = None
    packed_tokens: int | None = None  # real tokens of a packed batch (it has no attention mask)

    @property
    def n_tokens(self) -> int:
        """Real (non-pad) tokens in the batch."""
        if self.attention_mask is not None:
            return int(self.attention_mask.sum())
        return self.packed_tokens if self.packed_tokens is not None else self.input_ids.numel()

    @property
    def n_targets(self) -> int:
        return int(self.mask[:, 1:].sum())


def collate(examples: list[Example], pad_id: int) -> Batch:
    """Right-padded batch."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(examples), width), dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        att[i, :n] = 1
        mask[i, :n] = torch.tensor(e.mask)
    return Batch(ids, att, mask)


def pack(examples: list[Example], max_len: int, pad_id: int, rows: int) -> list[Batch]:
    """Greedy first-fit packing into rows of ``max_len``; position ids restart at every example.

    No attention mask is passed: the model derives a block-diagonal causal mask from the position
    ids, so a token attends only to earlier tokens of its own example. The tail of a row is a
    separate run of pad tokens that is never trained.
    """
    bins: list[list[Example]] = []
    space: list[int] = []
    for e in examples:
        n = len(e.input_ids)
        for b, free in enumerate(space):
            if n <= free:
                bins[b].append(e)
                space[b] -= n
                break
        else:
            bins.append([e])
            space.append(max_len - n)
    batches = []
    for start in range(0, len(bins), rows):
        group = bins[start : start + rows]
        width = max(sum(len(e.input_ids) for e in b) for b in group)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        pos = torch.arange(width).repeat(len(group), 1)
        mask = torch.zeros((len(group), width), dtype=torch.bool)
        for r, b in enumerate(group):
            at = 0
            for e in b:
                n = len(e.input_ids)
                ids[r, at : at + n] = torch.tensor(e.input_ids)
                pos[r, at : at + n] = torch.arange(n)
                mask[r, at : at + n] = torch.tensor(e.mask)
                at += n
            if at < width:
                pos[r, at:] = torch.arange(width - at)
        batches.append(Batch(ids, None, mask, pos, packed_tokens=sum(len(e.input_ids) for b in group for e in b)))
    return batches


def epoch_batches(
    examples: list[Example],
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    pad_id: int,
    length_grouping: bool = True,
    packing: bool = False,
    max_len: int = 1024,
) -> list[Batch]:
    """The epoch's batches, a pure function of (examples, seed, epoch)."""
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(examples)))
    rng.shuffle(order)
    shuffled = [examples[i] for i in order]
    if packing:
        batches = pack(shuffled, max_len, pad_id, batch_size)
        rng.shuffle(batches)
        return batches
    if length_grouping:
        groups = []
        mega = batch_size * 16
        for s in range(0, len(shuffled), mega):
            chunk = sorted(shuffled[s : s + mega], key=lambda e: len(e.input_ids))
            groups += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(groups)
    else:
        groups = [shuffled[i : i + batch_size] for i in range(0, len(shuffled), batch_size)]
    return [collate(g, pad_id) for g in groups]
