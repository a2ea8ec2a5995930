"""The generation engine a config names, behind :class:`~instructrl.models.generation.Generator`."""

from __future__ import annotations

from typing import Any, Literal

from instructrl.models.cached_generation import CachedGenerator
from instructrl.models.generation import Generator, HFGenerator

Engine = Literal["cached", "hf"]


def make_generator(
    model: Any,
    tok: Any,
    *,
    engine: Engine = "cached",
    batch_size: int = 16,
    max_prompt_tokens: int | None = None,
    progress: bool = False,
) -> Generator:
    """``cached``: instructrl's decode loop (finished rows leave, waiting ones join); ``hf``: ``model.generate``."""
    if engine == "hf":
        return HFGenerator(model, tok, batch_size, max_prompt_tokens=max_prompt_tokens, progress=progress)
    if engine == "cached":
        return CachedGenerator(model, tok, batch_size, max_prompt_tokens=max_prompt_tokens, progress=progress)
    raise ValueError(f"unknown generation engine {engine!r}; choose 'cached' or 'hf'")
