"""A local Hugging Face causal LM as the :class:`~instructrl.eval.tasks.LanguageModel` tasks use.

Log-likelihoods go through :func:`instructrl.models.forward.shared_context_logprobs` (each
question's context forwarded once for all of its choices, only continuation positions through the
unembedding); generations through the project's generation engines
(:func:`instructrl.models.engines.make_generator`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from instructrl.eval.sample import load_policy
from instructrl.eval.tasks import Loglik
from instructrl.models.engines import make_generator
from instructrl.models.forward import encode_continuations, shared_context_logprobs
from instructrl.records import PromptText
from instructrl.utils.device import autocast, resolve_precision

log = logging.getLogger(__name__)


class HFLanguageModel:
    """``model``/``tok`` on ``device``; ``forward_batch_size`` continuations per log-likelihood
    forward pass, ``batch_size`` sequences decoded together, computations under ``amp_dtype``
    autocast (fp32: none)."""

    def __init__(
        self,
        model: Any,
        tok: Any,
        device: torch.device,
        *,
        batch_size: int = 16,
        forward_batch_size: int = 16,
        amp_dtype: torch.dtype = torch.float32,
        engine: str = "cached",
        progress: bool = False,
    ):
        self.model, self.tok, self.device = model, tok, device
        self.batch_size, self.forward_batch_size = batch_size, forward_batch_size
        self.amp_dtype, self.engine, self.progress = amp_dtype, engine, progress
        self.max_length = getattr(model.config, "max_position_embeddings", None)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    @classmethod
    def load(
        cls, name_or_path: str, *, device: str = "auto", dtype: str = "fp32", precision: str = "fp32", **kwargs: Any
    ) -> HFLanguageModel:
        """Load a model ('default', a model directory, a run directory with final/, a hub id)."""
        model, tok, dev = load_policy(name_or_path, device=device, dtype=dtype)
        return cls(model, tok, dev, amp_dtype=resolve_precision(precision, dev), **kwargs)

    def loglikelihoods(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[Loglik]]:
        groups = [encode_continuations(self.tok, context, conts) for context, conts in requests]
        with autocast(self.device, self.amp_dtype):
            per_token = shared_context_logprobs(
                self.model,
                groups,
                batch_size=self.forward_batch_size,
                max_length=self.max_length,
                pad_id=self.pad_id,
                device=self.device,
                progress=self.progress,
            )
        return [[Loglik(float(sum(t)), len(t)) for t in group] for group in per_token]

    def generate(
        self,
        prompts: Sequence[PromptText],
        *,
        raw: bool,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] | None = None,
        seed: int = 0,
        max_prompt_tokens: int | None = None,
    ) -> list[str]:
        gen = make_generator(
            self.model,
            self.tok,
            engine=self.engine,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            max_prompt_tokens=max_prompt_tokens,
            progress=self.progress,
        )
        with autocast(self.device, self.amp_dtype):
            out = gen.generate(
                list(prompts),
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                stop=stop,
                seed=seed,
                raw=raw,
            )
        return [g.text for g in out]
