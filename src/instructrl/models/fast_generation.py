"""A faster generation engine behind the :class:`~instructrl.models.generation.Generator` interface.

:class:`CachedGenerator` runs its own decode loop over a Hugging Face causal LM instead of
``model.generate``. What makes it faster where responses stop at their own length:

* **Continuous batching**: a finished sequence leaves the batch and a waiting prompt takes its
  place, so every decode step works on a full batch instead of running until the longest member
  of a fixed batch ends.
* **Length bucketing**: waiting prompts are taken in order of length, so prompts that are
  prefilled together need little padding.
* **A KV cache that grows in place**: each layer's keys and values live in a buffer with spare
  room; a step writes one column instead of concatenating the whole cache (what
  ``DynamicCache`` does), and rows are removed or added only when the batch changes.
* **Little work per step**: one forward call, greedy argmax or one multinomial draw; no logits
  processors or stopping-criteria objects.

Rows are left-padded in the cache (each row's real tokens end at the last column); the attention
mask hides padding and every row carries its own position ids, so a row's outputs do not depend
on which other rows share its batch (up to floating-point rounding of different batch shapes).
Greedy decoding returns the same tokens as :class:`~instructrl.models.generation.HFGenerator`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from instructrl.models.generation import Generation, HFGenerator, _check_args, _eos_ids, _finish, cut_at_stop
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


class CachedGenerator(HFGenerator):
    """Continuous-batching decode loop over a local Hugging Face causal LM (see the module docs).

    ``batch_size`` is the number of sequences decoded together; ``refill_fraction``: free slots
    are refilled from the waiting prompts once at least this fraction of the batch is free (a
    refill costs one prefill call, so refilling one slot at a time wastes calls).
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 16, *, max_prompt_tokens: int | None = None,
                 progress: bool = False, refill_fraction: float = 0.25):
        super().__init__(model, tokenizer, batch_size, max_prompt_tokens=max_prompt_tokens, progress=progress)
        if not 0 < refill_fraction <= 1:
            raise ValueError(f"refill_fraction must be in (0, 1], got {refill_fraction}")
        self.refill_fraction = refill_fraction
        config = getattr(model, "config", None)
        if getattr(config, "sliding_window", None) and "sliding_attention" in (getattr(config, "layer_types", None) or []):
            raise ValueError("CachedGenerator does not support sliding-window attention layers; use HFGenerator")

    def generate(self, prompts: Sequence[PromptText], *, max_new_tokens: int = 256, temperature: float = 1.0,
                 top_p: float = 1.0, stop: Sequence[str] | None = None, seed: int | None = None,
                 raw: bool = False) -> list[Generation]:
        _check_args(prompts, max_new_tokens, temperature, top_p, raw)
        if not prompts:
            return []
        encoded = self._encode(prompts, raw)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                new_tokens = self._decode(encoded, max_new_tokens, temperature, top_p, stop, seed)
        finally:
            self.model.train(was_training)
        eos = _eos_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos[0]
        return [_finish(ids, self.tokenizer, eos, pad, stop, max_new_tokens) for ids in new_tokens]

    # ------------------------------------------------------------------ the decode loop

    def _decode(self, encoded: list[list[int]], max_new_tokens: int, temperature: float, top_p: float,
                stop: Sequence[str] | None, seed: int | None) -> list[list[int]]:
        from tqdm.auto import tqdm

        model, tok = self.model, self.tokenizer
        device = next(model.parameters()).device
        eos = torch.tensor(_eos_ids(model, tok), device=device)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else int(eos[0])
        gen = torch.Generator(device=device)
        gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,))))
        # length bucketing: the longest prompts first, taken in runs of similar length
        waiting = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        results: list[list[int]] = [[] for _ in encoded]
        rows: list[_Row] = []
        cache, mask, last = None, None, None
        n_layers = model.config.get_text_config().num_hidden_layers
        bar = tqdm(total=len(encoded), desc="generate", unit="seq", disable=not self.progress or len(encoded) < 2)
        dead: list[int] = []
        while rows or waiting:
            free = self.batch_size - (len(rows) - len(dead))
            if waiting and (not rows or free >= max(1, int(self.refill_fraction * self.batch_size))):
                if dead:
                    cache, mask, last = self._keep(cache, mask, last, rows, dead)
                    dead = []
                take, waiting = waiting[:free], waiting[free:]
                cache, mask, last = self._admit(take, encoded, rows, cache, mask, last, n_layers, pad_id, device,
                                                temperature, top_p, gen)
            else:
                positions = torch.tensor([r.position for r in rows], device=device)[:, None]
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
                out = model(input_ids=last[:, None], attention_mask=mask, position_ids=positions,
                            past_key_values=cache, use_cache=True)
                last = self._sample(out.logits[:, -1], temperature, top_p, gen)
                for r, t in zip(rows, last.tolist()):
                    r.tokens.append(t)
                    r.position += 1
            # rows that are done leave (dead rows are dropped from the cache in bulk)
            ended = (last[:, None] == eos[None, :]).any(-1).tolist()
            dead_set = set(dead)
            for k, r in enumerate(rows):
                if k in dead_set:
                    continue
                if ended[k] or len(r.tokens) >= max_new_tokens or (stop and self._hit_stop(r.tokens, stop)):
                    results[r.index] = list(r.tokens)
                    dead.append(k)
                    bar.update(1)
            if dead and (len(dead) == len(rows) or len(dead) >= max(1, len(rows) // 4)):
                cache, mask, last = self._keep(cache, mask, last, rows, dead)
                dead = []
        bar.close()
        return results

    def _hit_stop(self, tokens: list[int], stop: Sequence[str]) -> bool:
        return cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), stop)[1]

    @staticmethod
    def _sample(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> torch.Tensor:
        if temperature == 0:
            return logits.float().argmax(-1)  # (the bf16 argmax kernel is about twice as slow)
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        if top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            # keep the smallest prefix whose mass reaches top_p (the first token always stays)
            drop = sorted_p.cumsum(-1) - sorted_p >= top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        return torch.multinomial(probs, 1, generator=gen).squeeze(-1)

    def _keep(self, cache, mask, last, rows: list[_Row], dead: list[int]):
        """Drop the ``dead`` rows from the batch; trim leading columns that are padding in every row."""
        drop = set(dead)
        keep = [k for k in range(len(rows)) if k not in drop]
        rows[:] = [rows[k] for k in keep]
        if not keep:
            return None, None, None
        idx = torch.tensor(keep, device=mask.device)
        mask = mask[idx]
        first = int(mask.any(0).long().argmax())  # the first column some row still uses
        mask = mask[:, first:]
        for layer in cache.layers:
            n = layer.length
            layer.set_buffers(layer.kbuf[idx, :, first:].contiguous(), layer.vbuf[idx, :, first:].contiguous(),
                              n - first)
        return cache, mask, last[idx]

    def _admit(self, take: list[int], encoded: list[list[int]], rows: list[_Row], cache, mask, last,
               n_layers: int, pad_id: int, device: torch.device, temperature: float, top_p: float,
               gen: torch.Generator):
        """Prefill the prompts ``take`` (left-padded together), sample their first tokens and merge
        them into the running batch's cache (left-padding the shorter of the two)."""
        width = max(len(encoded[i]) for i in take)
        ids = torch.full((len(take), width), pad_id, dtype=torch.long)
        new_mask = torch.zeros((len(take), width), dtype=torch.long)
        for row, i in enumerate(take):
            ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
            new_mask[row, width - len(encoded[i]):] = 1
        ids, new_mask = ids.to(device), new_mask.to(device)
        positions = (new_mask.cumsum(-1) - 1).clamp(min=0)
        new_cache = _new_cache(n_layers)
        out = self.model(input_ids=ids, attention_mask=new_mask, position_ids=positions, past_key_values=new_cache,
                         use_cache=True, logits_to_keep=1)
        first = self._sample(out.logits[:, -1], temperature, top_p, gen)
        new_rows = [_Row(i, len(encoded[i]), [t]) for i, t in zip(take, first.tolist())]
        if cache is None:
            rows[:] = new_rows
            return new_cache, new_mask, first
        old_len, new_len = mask.shape[1], width
        total = max(old_len, new_len)
        n_old = mask.shape[0]
        merged_mask = mask.new_zeros((n_old + len(take), total))
        merged_mask[:n_old, total - old_len:] = mask
        merged_mask[n_old:, total - new_len:] = new_mask
        for old_layer, new_layer in zip(cache.layers, new_cache.layers):
            cap = max(total + 32, old_layer.kbuf.shape[-2] + (total - old_len))
            b, h, _, d = old_layer.kbuf.shape
            kbuf = old_layer.kbuf.new_zeros((n_old + len(take), h, cap, d))
            vbuf = old_layer.vbuf.new_zeros((n_old + len(take), h, cap, d))
            kbuf[:n_old, :, total - old_len : total] = old_layer.kbuf[:, :, :old_len]
            vbuf[:n_old, :, total - old_len : total] = old_layer.vbuf[:, :, :old_len]
            kbuf[n_old:, :, total - new_len : total] = new_layer.kbuf[:, :, :new_len]
            vbuf[n_old:, :, total - new_len : total] = new_layer.vbuf[:, :, :new_len]
            old_layer.set_buffers(kbuf, vbuf, total)
        rows.extend(new_rows)
        return cache, merged_mask, torch.cat([last, first])
