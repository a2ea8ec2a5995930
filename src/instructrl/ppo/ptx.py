"""PPO-ptx: the pretraining term ``gamma_ptx * E_x[log pi(x)]`` of InstructGPT's objective.

Pretraining text (``.txt`` files whose documents are separated by blank lines, or JSONL) is
tokenized, documents are joined with EOS, and the stream is cut into blocks of ``block_size``
tokens. A fraction of the blocks is held out to report the pretraining loss (the alignment tax
the term is there to pay back). Each PPO minibatch draws ``batch_size`` training blocks; which
ones is a pure function of ``(seed, step, minibatch)``, so a resumed run draws the same.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from instructrl.builtin import demonstration_text, load_demonstrations, resolve
from instructrl.models.forward import response_lm_loss
from instructrl.records import RecordError, iter_json_lines
from instructrl.utils.seed import derive


def read_documents(paths: list[str], text_field: str = "text") -> list[str]:
    """Documents of every file in ``paths`` (``.txt``: blank-line separated; JSONL: ``text_field``
    of each object, or each line's JSON string)."""
    docs: list[str] = []
    for spec in paths:
        if spec == "builtin:demo":  # the built-in demonstrations as plain text
            docs += [demonstration_text(d) for d in load_demonstrations(spec)]
            continue
        path = resolve(spec)
        if path.suffix == ".txt":
            if not path.exists():
                raise RecordError(str(path), None, "file not found")
            try:
                text = path.read_bytes().decode("utf-8-sig")
            except UnicodeDecodeError as e:
                line = path.read_bytes()[: e.start].count(b"\n") + 1
                raise RecordError(f"{path}:{line}", None, "not valid UTF-8; save the file as UTF-8") from None
            docs += [d.strip() for d in text.split("\n\n") if d.strip()]
            continue
        for lineno, obj in iter_json_lines(path):
            if isinstance(obj, str):
                text = obj
            elif isinstance(obj, dict):
                text = obj.get(text_field)
                if not isinstance(text, str):
                    raise RecordError(
                        f"{path}:{lineno}",
                        text_field,
                        "missing or not a string (set ptx.text_field to the field that holds the text)",
                    )
            else:
                raise RecordError(f"{path}:{lineno}", None, "expected an object or a string")
            if text.strip():
                docs.append(text)
    if not docs:
        raise RecordError(", ".join(paths), None, "no pretraining text in the files (ptx.data)")
    return docs


def make_blocks(token_lists: list[list[int]], eos_id: int, block_size: int) -> list[list[int]]:
    """Join the documents with EOS after each and cut the stream into ``block_size`` tokens; the
    last, shorter block is kept when it holds at least two tokens."""
    stream: list[int] = []
    for ids in token_lists:
        stream += list(ids) + [eos_id]
    blocks = [stream[i : i + block_size] for i in range(0, len(stream), block_size)]
    return [b for b in blocks if len(b) >= 2]


def split_blocks(blocks: list[list[int]], eval_fraction: float) -> tuple[list[list[int]], list[list[int]]]:
    """(train, held-out): a block is held out when the hash of its tokens falls in ``eval_fraction``."""
    if eval_fraction <= 0 or len(blocks) < 2:
        return blocks, []
    train, held = [], []
    for b in blocks:
        h = int(hashlib.sha256(repr(b).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (held if h < eval_fraction else train).append(b)
    if not train:  # keep something to train on
        train, held = held[:1], held[1:]
    return train, held


def collate_blocks(blocks: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``mask`` [B, T] (mask True at real tokens)."""
    width = max(len(b) for b in blocks)
    ids = torch.full((len(blocks), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(blocks), width), dtype=torch.bool)
    for i, b in enumerate(blocks):
        ids[i, : len(b)] = torch.tensor(b, dtype=torch.long)
        mask[i, : len(b)] = True
    return ids, mask


def ptx_nll_from_logits(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-mean negative log-likelihood of every real token after the first of each row:
    the reference form of :func:`ptx_nll` on full logits [B, T, V]."""
    target_mask = mask[:, 1:] & mask[:, :-1]
    targets = input_ids[:, 1:].masked_fill(~target_mask, 0)
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return -(logp * target_mask).sum() / target_mask.sum().clamp(min=1)


def ptx_nll(model: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-mean NLL of the blocks under ``model``; ``-ptx_nll`` estimates ``E_x[log pi(x)]`` per token."""
    nll, n = response_lm_loss(model, input_ids, mask.long(), mask)
    return nll / max(1, n)


class PtxData:
    """Pretraining blocks, split into training and held-out, with deterministic minibatch draws."""

    def __init__(
        self, tok: Any, paths: list[str], *, text_field: str, block_size: int, eval_fraction: float, seed: int
    ):
        docs = read_documents(paths, text_field)
        ids = tok(docs, add_special_tokens=False)["input_ids"]
        blocks = make_blocks(ids, tok.eos_token_id, block_size)
        self.train, self.held_out = split_blocks(blocks, eval_fraction)
        self.pad_id, self.seed = tok.pad_token_id, seed

    def batch(self, step: int, epoch: int, minibatch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(derive(self.seed, "ptx", step, epoch, minibatch))
        pick = torch.randint(len(self.train), (size,), generator=g).tolist()
        return collate_blocks([self.train[i] for i in pick], self.pad_id)

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, device: torch.device, max_blocks: int, batch_size: int, autocast_ctx: Any
    ) -> float | None:
        """Token-mean NLL of up to ``max_blocks`` held-out blocks (None when nothing is held out)."""
        blocks = self.held_out[:max_blocks]
        if not blocks:
            return None
        total, count = 0.0, 0
        for s in range(0, len(blocks), batch_size):
            ids, mask = collate_blocks(blocks[s : s + batch_size], self.pad_id)
            n = int((mask[:, 1:] & mask[:, :-1]).sum())
            with autocast_ctx():
                total += float(ptx_nll(model, ids.to(device), mask.to(device))) * n
            count += n
        return total / max(1, count)
