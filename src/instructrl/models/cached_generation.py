"""A faster generation engine behind the :class:`~instructrl.models.generation.Generator` interface.

:class:`CachedGenerator` runs its own decode loop over a Hugging Face causal LM instead of
``model.generate``. What makes it faster where responses stop at their own length:

* **Continuous batching**: the batch is ``batch_size`` slots; when a sequence ends, the next
  waiting prompt takes its slot at once, so the decode steps keep working on live sequences
  instead of running a fixed batch until its longest member ends.
* **Length bucketing**: prompts are prefilled in groups of ``batch_size`` taken in order of length
  (so a group needs little padding); a prefilled group waits beside the running batch and its
  rows move into slots as slots free up.
* **A KV cache that grows in place**: each layer's keys and values live in a buffer with spare
  room; a step writes one column instead of concatenating the whole cache (what
  ``DynamicCache`` does, which on a CPU costs as much memory traffic as the attention itself).
  Leading columns that no live row uses any more are dropped now and then.
* **Little work per step**: one forward call, greedy argmax or one multinomial draw; no logits
  processors or stopping-criteria objects.

Rows are left-padded in the cache and every row carries its own position ids. While prompts
wait, a finished slot is refilled before the next step, so the matrix products see
``batch_size`` rows as in ``model.generate`` (the kernels that bf16 matrix products pick depend on
the number of rows, and each row's result depends only on that number); once nothing waits,
finished slots leave the batch a quarter at a time. The prefill groups are the batches
:class:`~instructrl.models.generation.HFGenerator` makes. So greedy decoding returns the same
tokens as HFGenerator: exactly in fp32 (tests check it); in bf16 a row that joins the batch later
sits at another column offset of the cache than in ``model.generate``, and the CPU attention
kernel's bf16 sums depend on how the columns fall into its blocks (16 columns, 512 for long
caches), so such a row can drift onto another greedy path where two tokens are near-tied
(``benchmarks/generation.py`` counts identical outputs, and HF generate's own agreement with
itself at another batch size).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from instructrl.models.generation import (
    Generation,
    HFGenerator,
    check_generate_args,
    cut_at_stop,
    eos_ids_of,
    finish_generation,
)
from instructrl.models.kv import cache_argument
from instructrl.records import PromptText


def _growing_layer_class():
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """One layer's keys and values in a buffer with spare columns: appending writes in place."""

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            super().lazy_initialization(key_states, value_states)
            self.length = 0
            self.kbuf = self.vbuf = None

        def set_buffers(self, kbuf: torch.Tensor, vbuf: torch.Tensor, length: int) -> None:
            self.is_initialized = True
            self.dtype, self.device = kbuf.dtype, kbuf.device
            self.kbuf, self.vbuf, self.length = kbuf, vbuf, length
            self.keys, self.values = kbuf[..., :length, :], vbuf[..., :length, :]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = key_states.shape[-2]
            need = self.length + n
            if self.kbuf is None or need > self.kbuf.shape[-2]:
                cap = max(need, 2 * (self.kbuf.shape[-2] if self.kbuf is not None else 0), 32)
                shape = (*key_states.shape[:-2], cap, key_states.shape[-1])
                kbuf = key_states.new_zeros(shape)
                vbuf = value_states.new_zeros((*value_states.shape[:-2], cap, value_states.shape[-1]))
                if self.length:
                    kbuf[..., : self.length, :] = self.kbuf[..., : self.length, :]
                    vbuf[..., : self.length, :] = self.vbuf[..., : self.length, :]
                self.kbuf, self.vbuf = kbuf, vbuf
            self.kbuf[..., self.length : need, :] = key_states
            self.vbuf[..., self.length : need, :] = value_states
            self.length = need
            self.keys, self.values = self.kbuf[..., :need, :], self.vbuf[..., :need, :]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

    return GrowingLayer


_LAYER_CLASS = None


def _new_cache(n_layers: int):
    global _LAYER_CLASS
    from transformers.cache_utils import Cache

    if _LAYER_CLASS is None:
        _LAYER_CLASS = _growing_layer_class()
    return Cache(layers=[_LAYER_CLASS() for _ in range(n_layers)])


@dataclasses.dataclass
class _Row:
    index: int  # position of the prompt in the call
    position: int  # position id of the next token
    tokens: list[int]
    logprobs: list[float]


@dataclasses.dataclass
class _Group:
    """A prefilled group of prompts waiting for slots: its rows, KV cache, mask and first tokens."""

    rows: list[_Row]
    cache: Any
    mask: torch.Tensor  # [g, W]
    next: int = 0  # first row not yet placed in a slot

    @property
    def left(self) -> int:
        return len(self.rows) - self.next


class CachedGenerator(HFGenerator):
    """Continuous-batching decode loop over a local Hugging Face causal LM (see the module docs).

    ``batch_size`` is the number of slots decoded together (and the size of a prefill group).
    Leading cache columns no row uses are dropped once there are ``trim_min_cols`` of them (and at
    least a quarter of the cache).
    """

    trim_min_cols = 64

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 16,
        *,
        max_prompt_tokens: int | None = None,
        progress: bool = False,
    ):
        super().__init__(model, tokenizer, batch_size, max_prompt_tokens=max_prompt_tokens, progress=progress)
        config = getattr(model, "config", None)
        if getattr(config, "sliding_window", None) and "sliding_attention" in (
            getattr(config, "layer_types", None) or []
        ):
            raise ValueError("CachedGenerator does not support sliding-window attention layers; use HFGenerator")

    def generate(
        self,
        prompts: Sequence[PromptText],
        *,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        raw: bool = False,
    ) -> list[Generation]:
        check_generate_args(prompts, max_new_tokens, temperature, top_p, raw)
        if not prompts:
            return []
        encoded = self._encode(prompts, raw)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                rows = self._decode(encoded, max_new_tokens, temperature, top_p, stop, seed)
        finally:
            self.model.train(was_training)
        eos = eos_ids_of(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos[0]
        return [finish_generation(r.tokens, self.tokenizer, eos, pad, stop, max_new_tokens, r.logprobs) for r in rows]

    # ------------------------------------------------------------------ the decode loop

    def _decode(
        self,
        encoded: list[list[int]],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop: Sequence[str] | None,
        seed: int | None,
    ) -> list[_Row]:
        from tqdm.auto import tqdm

        model, tok = self.model, self.tokenizer
        device = next(model.parameters()).device
        eos = set(eos_ids_of(model, tok))
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else min(eos)
        gen = torch.Generator(device=device)
        gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,))))
        # the prefill groups are HFGenerator's batches: longest prompts first, batch_size at a time
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        groups = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        n_layers = model.config.get_text_config().num_hidden_layers
        results: list[_Row] = [_Row(i, 0, [], []) for i in range(len(encoded))]
        bar = tqdm(total=len(encoded), desc="generate", unit="seq", disable=not self.progress or len(encoded) < 2)

        first = self._prefill(groups.pop(0), encoded, n_layers, pad_id, device, temperature, top_p, gen)
        cache, mask = first.cache, first.mask
        slots: list[_Row | None] = list(first.rows)
        last = torch.tensor([r.tokens[0] for r in first.rows], device=device)
        waiting: _Group | None = None

        def done(row: _Row) -> bool:
            return (
                row.tokens[-1] in eos
                or len(row.tokens) >= max_new_tokens
                or bool(stop and self._hit_stop(row.tokens, stop))
            )

        while True:
            # rows that are done leave their slots; waiting rows take free slots
            for k, row in enumerate(slots):
                if row is not None and done(row):
                    results[row.index] = row
                    slots[k] = None
                    mask[k] = 0
                    bar.update(1)
            if all(r is None for r in slots):  # an empty batch starts a fresh cache: rows sit at offset 0
                for layer in cache.layers:
                    layer.set_buffers(layer.kbuf, layer.vbuf, 0)
                mask = mask[:, :0]
            while None in slots and (waiting is not None and waiting.left or groups):
                if waiting is None or not waiting.left:
                    waiting = self._prefill(groups.pop(0), encoded, n_layers, pad_id, device, temperature, top_p, gen)
                    continue
                j = waiting.next
                waiting.next += 1
                row = waiting.rows[j]
                if done(row):  # its first token already ended it
                    results[row.index] = row
                    bar.update(1)
                    continue
                k = slots.index(None)
                mask = self._place(cache, mask, k, waiting, j)
                slots[k] = row
                last[k] = row.tokens[0]
            if all(r is None for r in slots):
                break
            free = [k for k, r in enumerate(slots) if r is None]
            if free and not groups and not (waiting is not None and waiting.left) and len(free) >= len(slots) // 4:
                # the tail: nothing left to place, so finished slots leave the batch (fewer rows to compute)
                keep = torch.tensor([k for k, r in enumerate(slots) if r is not None], device=device)
                for layer in cache.layers:
                    layer.set_buffers(layer.kbuf[keep], layer.vbuf[keep], layer.length)
                mask, last = mask[keep], last[keep]
                slots = [r for r in slots if r is not None]
            mask = self._trim(cache, mask, self.trim_min_cols)
            # one decode step over every slot (free slots compute a pad token attending to itself)
            positions = torch.tensor([r.position if r is not None else 0 for r in slots], device=device)[:, None]
            mask = torch.cat([mask, mask.new_ones((len(slots), 1))], dim=1)
            for k in (k for k, r in enumerate(slots) if r is None):
                mask[k, :-1] = 0  # a free slot attends only to its own (pad) token
            out = model(
                input_ids=last[:, None],
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{cache_argument(model): cache},
            )
            last, lps = self._sample(out.logits[:, -1], temperature, top_p, gen)
            for k, (row, t, lp) in enumerate(zip(slots, last.tolist(), lps.tolist())):
                if row is None:
                    last[k] = pad_id
                else:
                    row.tokens.append(t)
                    row.logprobs.append(lp)
                    row.position += 1
        bar.close()
        return results

    def _hit_stop(self, tokens: list[int], stop: Sequence[str]) -> bool:
        return cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), stop)[1]

    @staticmethod
    def _sample(
        logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next tokens [B] and their log-probs [B] at ``temperature`` (before top-p; at 0, at 1)."""
        logits = logits.float()
        if temperature == 0:
            tokens = logits.argmax(-1)  # (the bf16 argmax kernel is about twice as slow)
            return tokens, torch.log_softmax(logits, -1).gather(-1, tokens[:, None]).squeeze(-1)
        probs = torch.softmax(logits / temperature, dim=-1)
        logp = torch.log_softmax(logits / temperature, dim=-1)
        if top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            # keep the smallest prefix whose mass reaches top_p (the first token always stays)
            drop = sorted_p.cumsum(-1) - sorted_p >= top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        tokens = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
        return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)

    def _prefill(
        self,
        take: list[int],
        encoded: list[list[int]],
        n_layers: int,
        pad_id: int,
        device: torch.device,
        temperature: float,
        top_p: float,
        gen: torch.Generator,
    ) -> _Group:
        """Prefill the prompts ``take`` left-padded together (exactly as HFGenerator batches them)
        and sample their first tokens."""
        width = max(len(encoded[i]) for i in take)
        ids = torch.full((len(take), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(take), width), dtype=torch.long)
        for row, i in enumerate(take):
            ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        cache = _new_cache(n_layers)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{cache_argument(self.model): cache},
        )
        first, lps = self._sample(out.logits[:, -1], temperature, top_p, gen)
        rows = [_Row(i, len(encoded[i]), [t], [lp]) for i, t, lp in zip(take, first.tolist(), lps.tolist())]
        return _Group(rows, cache, mask)

    @staticmethod
    def _place(cache, mask: torch.Tensor, slot: int, group: _Group, j: int) -> torch.Tensor:
        """Copy row ``j`` of a prefilled group into ``slot`` of the running cache (right-aligned;
        the cache grows on the left when the row is longer than it). Returns the new mask."""
        width, length = group.mask.shape[1], mask.shape[1]
        if width > length:  # left-pad the whole running cache
            grow = width - length
            for layer in cache.layers:
                b, h, cap, d = layer.kbuf.shape
                kbuf = layer.kbuf.new_zeros((b, h, max(cap, layer.length + grow + 16), d))
                vbuf = torch.zeros_like(kbuf)
                kbuf[:, :, grow : grow + layer.length] = layer.kbuf[:, :, : layer.length]
                vbuf[:, :, grow : grow + layer.length] = layer.vbuf[:, :, : layer.length]
                layer.set_buffers(kbuf, vbuf, layer.length + grow)
            mask = torch.cat([mask.new_zeros((mask.shape[0], grow)), mask], dim=1)
            length = width
        mask[slot] = 0
        mask[slot, length - width :] = group.mask[j]
        for layer, src in zip(cache.layers, group.cache.layers):
            layer.kbuf[slot, :, : length - width] = 0
            layer.vbuf[slot, :, : length - width] = 0
            layer.kbuf[slot, :, length - width : length] = src.kbuf[j, :, :width]
            layer.vbuf[slot, :, length - width : length] = src.vbuf[j, :, :width]
        return mask

    @staticmethod
    def _trim(cache, mask: torch.Tensor, min_cols: int = 64) -> torch.Tensor:
        """Drop leading cache columns that no row attends to any more (once there are enough)."""
        used = mask.any(0)
        first = int(used.long().argmax()) if bool(used.any()) else 0
        if first < max(min_cols, mask.shape[1] // 4):
            return mask
        for layer in cache.layers:
            layer.set_buffers(
                layer.kbuf[:, :, first:].contiguous(), layer.vbuf[:, :, first:].contiguous(), layer.length - first
            )
        return mask[:, first:]
