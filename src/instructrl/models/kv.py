"""How a Hugging Face decoder takes and returns its KV cache, across transformers versions.

transformers renamed the ``past_key_values`` argument and output of decoders to ``cache`` (the old
name is deprecated and goes away in 5.40). Every call site in instructrl that hands a cache over or
reads one back goes through these two functions, so that it uses the supported name of the installed
version and never the deprecated one.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any


@functools.cache
def _takes_cache(forward: Any) -> bool:
    return "cache" in inspect.signature(forward).parameters


def _innermost(module: Any) -> Any:
    """The Hugging Face model inside wrappers that pass keywords through (a PEFT model, DDP)."""
    for _ in range(8):
        if hasattr(module, "get_base_model"):
            module = module.get_base_model()
        elif type(module).__name__ == "DistributedDataParallel" and hasattr(module, "module"):
            module = module.module
        else:
            break
    return module


def cache_argument(module: Any) -> str:
    """The keyword under which ``module.forward`` takes a KV cache: ``cache``, or ``past_key_values`` before.

    Wrappers (PEFT, DDP) take ``**kwargs`` and hand them to the model inside, so the model inside decides.
    """
    return "cache" if _takes_cache(type(_innermost(module)).forward) else "past_key_values"


def cache_of(output: Any) -> Any:
    """The KV cache a forward call returned (``output.cache``, or ``output.past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
