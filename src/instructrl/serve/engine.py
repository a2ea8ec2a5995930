"""Decode engines for serving: requests arrive one by one, at any time, and stream their tokens back.

* :class:`BatchEngine` (``engine=batched``, the default): continuous batching over a Hugging Face
  causal LM. One thread owns the model. Between two decode steps it admits waiting requests (their
  prompts are prefilled together, left-padded, and their rows join the running KV cache), and rows
  that finished or whose client went away leave the batch. Each row keeps its own sampling settings
  (temperature, top-p, seed, stop strings, token limit). The KV cache grows in place as in
  :mod:`instructrl.models.cached_generation`, whose cache layers it shares.
* :class:`PerRequestEngine` (``engine=hf``): ``model.generate`` on one request at a time, streaming
  through a streamer. It is the baseline that ``benchmarks/serve.py`` measures the batch engine
  against, and a fallback for architectures the batch engine refuses (sliding-window attention).

Both hand out :class:`Sequence` objects; a sequence turns its tokens into text deltas (held back
while they could still be the start of a stop string or an incomplete UTF-8 character) and tells its
listener through a callback, from the engine's thread.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Callable
from collections.abc import Sequence as Seq
from typing import Any

import torch

from instructrl.models.cached_generation import CachedGenerator, _new_cache
from instructrl.models.generation import cut_at_stop, eos_ids_of
from instructrl.models.kv import cache_argument

log = logging.getLogger(__name__)

#: spare cache columns allocated when batches merge, so that the next steps append in place
SPARE_COLUMNS = 64


class EngineError(RuntimeError):
    """The engine failed (a bug or the machine, not the request): the request ends with a server error."""


@dataclasses.dataclass
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # go on past the end-of-sequence token (vLLM's extension; for load tests)


Event = tuple[str, Any]  # ("delta", text) | ("done", finish_reason) | ("error", message)


class Sequence:
    """One generated continuation of one prompt. The engine calls :meth:`push` with each new token; the
    listener gets ``("delta", text)`` events and one final ``("done", reason)`` or ``("error", message)``.
    """

    def __init__(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        tokenizer: Any,
        eos: set[int],
        listener: Callable[[Event], None],
    ):
        self.prompt_ids, self.params, self.tokenizer, self.eos = prompt_ids, params, tokenizer, eos
        self.listener = listener
        self.tokens: list[int] = []
        self.text = ""
        self.sent = 0  # characters of text already sent
        self.finish_reason: str | None = None
        self.cancelled = False  # set from another thread when the client goes away
        self.generator = torch.Generator()
        self.generator.manual_seed(params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,))))
        self._hold = max((len(s) for s in params.stop), default=1) - 1

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def cancel(self) -> None:
        self.cancelled = True

    def push(self, token: int) -> bool:
        """Take one generated token; returns whether the sequence is finished."""
        if self.finished:
            return True
        self.tokens.append(token)
        if token in self.eos and not self.params.ignore_eos:
            return self._finish("stop", self.tokenizer.decode(self.tokens[:-1], skip_special_tokens=True))
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cut, hit = cut_at_stop(text, self.params.stop)
        if hit:
            return self._finish("stop", cut)
        if len(self.tokens) >= self.params.max_tokens:
            return self._finish("length", text)
        # send what can no longer change: not a partial character, not the start of a stop string
        safe = len(text) - self._hold
        while safe > self.sent and text[safe - 1] == "\ufffd":
            safe -= 1
        if safe > self.sent:
            self.listener(("delta", text[self.sent : safe]))
            self.sent = safe
        self.text = text
        return False

    def _finish(self, reason: str, text: str) -> bool:
        self.text = text
        if len(text) > self.sent:
            self.listener(("delta", text[self.sent :]))
            self.sent = len(text)
        self.finish_reason = reason
        self.listener(("done", reason))
        return True

    def fail(self, message: str) -> None:
        if not self.finished:
            self.finish_reason = "error"
            self.listener(("error", message))

    def drop(self) -> None:
        """The client went away: end without telling it anything more."""
        self.finish_reason = self.finish_reason or "cancelled"


class _Engine:
    """What both engines share: a thread that owns the model, a queue of new sequences, start and stop."""

    name = "engine"

    def __init__(self, model: Any, tokenizer: Any, *, max_context: int | None = None, threads: int | None = None):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.eos = set(eos_ids_of(model, tokenizer))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos)
        configured = getattr(model.config, "max_position_embeddings", None) or 2048
        self.max_context = min(max_context or configured, configured)
        self.device = next(model.parameters()).device
        self.threads = threads
        self._new: queue.Queue[Sequence | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.steps = 0  # decode steps run (for /metrics and tests)
        self.running = 0  # rows in the running batch
        self._active: list[Sequence] = []  # the rows being decoded, failed too if the engine dies

    def sequence(self, prompt_ids: list[int], params: SamplingParams, listener: Callable[[Event], None]) -> Sequence:
        return Sequence(prompt_ids, params, self.tokenizer, self.eos, listener)

    def submit(self, seq: Sequence) -> None:
        if self._stopping:
            raise EngineError("the server is shutting down")
        self._new.put(seq)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=f"instructrl-{self.name}", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def stop(self) -> None:
        self._stopping = True
        self._new.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _main(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                self._loop()
        except Exception as e:  # a bug or out of memory: every waiting client gets an error, not a hang
            log.exception("the %s engine stopped", self.name)
            self._fail_all(f"the engine failed: {type(e).__name__}: {e}")

    def _fail_all(self, message: str) -> None:
        self._stopping = True
        for seq in self._active:
            seq.fail(message)
        while True:
            try:
                seq = self._new.get_nowait()
            except queue.Empty:
                break
            if seq is not None:
                seq.fail(message)

    def _loop(self) -> None:  # pragma: no cover - each engine has its own
        raise NotImplementedError


# --------------------------------------------------------------------------- continuous batching


class BatchEngine(_Engine):
    """Continuous batching (see the module docs). ``max_batch`` rows decode together; ``max_prefill``
    prompts at most are prefilled between two decode steps, so that a burst of arrivals delays the
    running rows by one bounded prefill."""

    name = "batched"

    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 32, max_prefill: int = 8, **kwargs: Any):
        super().__init__(model, tokenizer, **kwargs)
        config = getattr(model, "config", None)
        if getattr(config, "sliding_window", None) and "sliding_attention" in (
            getattr(config, "layer_types", None) or []
        ):
            raise ValueError("engine=batched does not support sliding-window attention layers; use engine=hf")
        if max_batch < 1 or max_prefill < 1:
            raise ValueError("max_batch and max_prefill must be >= 1")
        self.max_batch, self.max_prefill = max_batch, max_prefill
        self.n_layers = model.config.get_text_config().num_hidden_layers
        self._cache_kw = cache_argument(model)

    def _loop(self) -> None:
        rows: list[Sequence] = []
        cache, mask = None, None
        positions: list[int] = []
        last = torch.zeros(0, dtype=torch.long)
        while True:
            # admit: block while idle, otherwise take what has arrived (up to the free slots)
            new: list[Sequence] = []
            while len(rows) + len(new) < self.max_batch and len(new) < self.max_prefill:
                try:
                    seq = self._new.get(block=not rows and not new)
                except queue.Empty:
                    break
                if seq is None:
                    for row in rows:
                        row.fail("the server is shutting down")
                    return
                if not seq.cancelled:
                    new.append(seq)
            if new:
                group_cache, group_mask, first = self._prefill(new)
                if cache is None or not rows:
                    cache, mask, last = group_cache, group_mask, first
                    rows, positions = list(new), [len(s.prompt_ids) for s in new]
                else:
                    mask = self._merge(cache, mask, group_cache, group_mask)
                    rows += new
                    positions += [len(s.prompt_ids) for s in new]
                    last = torch.cat([last, first])
                for seq, t in zip(new, first.tolist()):
                    seq.push(t)
            # rows that finished or whose client left go
            keep = [k for k, s in enumerate(rows) if not (s.finished or s.cancelled)]
            for s in rows:
                if s.cancelled:
                    s.drop()
            if len(keep) < len(rows):
                if not keep:
                    rows, cache, mask, positions, last = [], None, None, [], last[:0]
                    self.running = 0
                    continue
                index = torch.tensor(keep, device=self.device)
                for layer in cache.layers:
                    layer.set_buffers(layer.kbuf[index], layer.vbuf[index], layer.length)
                mask, last = mask[index], last[index]
                rows = [rows[k] for k in keep]
                positions = [positions[k] for k in keep]
            self._active = rows
            if not rows:
                continue
            self.running = len(rows)
            mask = CachedGenerator._trim(cache, mask, CachedGenerator.trim_min_cols)
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            out = self.model(
                input_ids=last[:, None],
                attention_mask=mask,
                position_ids=torch.tensor(positions, device=self.device)[:, None],
                use_cache=True,
                **{self._cache_kw: cache},
            )
            last = self._sample(out.logits[:, -1], rows)
            self.steps += 1
            for k, (seq, t) in enumerate(zip(rows, last.tolist())):
                positions[k] += 1
                seq.push(t)

    def _prefill(self, seqs: list[Sequence]) -> tuple[Any, torch.Tensor, torch.Tensor]:
        width = max(len(s.prompt_ids) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, width - len(s.prompt_ids) :] = torch.tensor(s.prompt_ids)
            mask[r, width - len(s.prompt_ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        cache = _new_cache(self.n_layers)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).masked_fill(mask == 0, 1),
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kw: cache},
        )
        return cache, mask, self._sample(out.logits[:, -1], seqs)

    def _merge(self, cache: Any, mask: torch.Tensor, group_cache: Any, group_mask: torch.Tensor) -> torch.Tensor:
        """Append a prefilled group's rows to the running cache (both right-aligned); the new mask."""
        b, length = mask.shape
        g, width = group_mask.shape
        cols = max(length, width)
        for layer, src in zip(cache.layers, group_cache.layers):
            _, heads, _, dim = layer.kbuf.shape
            kbuf = layer.kbuf.new_zeros((b + g, heads, cols + SPARE_COLUMNS, dim))
            vbuf = torch.zeros_like(kbuf)
            kbuf[:b, :, cols - length : cols] = layer.kbuf[:, :, :length]
            vbuf[:b, :, cols - length : cols] = layer.vbuf[:, :, :length]
            kbuf[b:, :, cols - width : cols] = src.kbuf[:, :, :width]
            vbuf[b:, :, cols - width : cols] = src.vbuf[:, :, :width]
            layer.set_buffers(kbuf, vbuf, cols)
        merged = mask.new_zeros((b + g, cols))
        merged[:b, cols - length :] = mask
        merged[b:, cols - width :] = group_mask
        return merged

    def _sample(self, logits: torch.Tensor, seqs: Seq[Sequence]) -> torch.Tensor:
        """One next token per row, each row with its own temperature, top-p and random stream."""
        logits = logits.float()
        greedy = logits.argmax(-1)
        out = greedy.clone()
        for r, seq in enumerate(seqs):
            p = seq.params
            if p.temperature == 0:
                continue
            probs = torch.softmax(logits[r] / p.temperature, dim=-1)
            if p.top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                drop = sorted_p.cumsum(-1) - sorted_p >= p.top_p
                probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p.masked_fill(drop, 0.0))
            out[r] = torch.multinomial(probs, 1, generator=seq.generator)[0]
        return out


# --------------------------------------------------------------------------- one request at a time


class PerRequestEngine(_Engine):
    """``model.generate`` on one request at a time (the baseline; see the module docs)."""

    name = "hf"

    def _loop(self) -> None:
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        class Streamer(BaseStreamer):
            def __init__(self, seq: Sequence):
                self.seq, self.prompt_seen = seq, False

            def put(self, value: torch.Tensor) -> None:
                if not self.prompt_seen:  # generate hands the prompt over first
                    self.prompt_seen = True
                    return
                for t in value.reshape(-1).tolist():
                    self.seq.push(int(t))

            def end(self) -> None:
                pass

        class Ended(StoppingCriteria):
            def __init__(self, seq: Sequence):
                self.seq = seq

            def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
                done = self.seq.finished or self.seq.cancelled
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

        while True:
            seq = self._new.get()
            if seq is None:
                return
            if seq.cancelled:
                seq.drop()
                continue
            p = seq.params
            kwargs: dict[str, Any] = dict(
                max_new_tokens=p.max_tokens,
                pad_token_id=self.pad_id,
                eos_token_id=sorted(self.eos),
                use_cache=True,
                streamer=Streamer(seq),
                stopping_criteria=StoppingCriteriaList([Ended(seq)]),
            )
            if p.ignore_eos:  # generate cannot go past an end-of-sequence token; it is never drawn instead
                kwargs["min_new_tokens"] = p.max_tokens
            if p.temperature > 0:
                kwargs.update(do_sample=True, temperature=p.temperature, top_p=p.top_p, top_k=0)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            self.running, self._active = 1, [seq]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seq.generator.initial_seed()) % 2**63)
                self.model.generate(input_ids=torch.tensor([seq.prompt_ids], device=self.device), **kwargs)
            self.running, self._active = 0, []
            self.steps += len(seq.tokens)
            if seq.cancelled:
                seq.drop()
            elif not seq.finished:  # generate stopped on its own count
                seq._finish("length", seq.text)


ENGINES = {"batched": BatchEngine, "hf": PerRequestEngine}
