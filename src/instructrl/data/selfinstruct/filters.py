"""Filters for new instructions and their instances. Each returns reasons, never raises.

Instruction drop reasons: ``empty``, ``too_short``, ``too_long``, ``banned_word``, ``banned_prefix``,
``starts_with_punctuation``, ``starts_non_ascii`` (and, from the novelty index, ``not_novel``).
Instance drop reasons: ``empty_output`` (also a placeholder such as "none" or "N/A", or no letter or
digit at all), ``output_repeats_instruction``, ``too_long``, ``input_equals_output``,
``duplicate_instance``, ``conflicting_outputs`` (the same non-empty input with different outputs:
all of them go, since at most one can be right; a task without input may have several outputs).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache

from instructrl.data.selfinstruct.config import FilterConfig
from instructrl.data.selfinstruct.tasks import Instance

PLACEHOLDERS = {
    "none",
    "<none>",
    "(none)",
    "n/a",
    "na",
    "<noinput>",
    "<nooutput>",
    "no input",
    "no output",
    "-",
    "empty",
    "<empty>",
    "null",
    "nil",
}


def is_placeholder(text: str) -> bool:
    """Text that stands for "nothing" (e.g. ``none``, ``N/A``, ``<noinput>``), any case and quoting."""
    return text.strip().strip("\"'`.,;:!").strip().lower() in PLACEHOLDERS


@lru_cache(maxsize=32)
def _banned_pattern(words: tuple[str, ...]) -> re.Pattern | None:
    words = tuple(w.strip().lower() for w in words if w.strip())
    if not words:
        return None
    alternatives = "|".join(
        r"\s+".join(re.escape(part) for part in w.split()) for w in sorted(words, key=len, reverse=True)
    )
    return re.compile(rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])")


def instruction_drop_reason(instruction: str, cfg: FilterConfig) -> str | None:
    """Why ``instruction`` is dropped before the novelty check, or None when it passes."""
    text = instruction.strip()
    if not text:
        return "empty"
    n_words = len(text.split())
    if n_words < cfg.min_words:
        return "too_short"
    if n_words > cfg.max_words:
        return "too_long"
    lower = text.lower()
    pattern = _banned_pattern(tuple(cfg.banned_words))
    if pattern is not None and pattern.search(lower):
        return "banned_word"
    if any(lower.startswith(p.strip().lower()) for p in cfg.banned_prefixes if p.strip()):
        return "banned_prefix"
    if cfg.drop_leading_punctuation and text[0] in string.punctuation:
        return "starts_with_punctuation"
    if cfg.drop_non_ascii_start and not text[0].isascii():
        return "starts_non_ascii"
    return None


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.lower().split()).rstrip(".!?") == " ".join(b.lower().split()).rstrip(".!?")


def filter_instances(
    instances: list[Instance], cfg: FilterConfig, instruction: str = ""
) -> tuple[list[Instance], Counter]:
    """Keep the well-formed, consistent instances (order kept); count the rest by reason."""
    drops: Counter = Counter()
    candidates: list[Instance] = []
    seen: set[tuple[str, str]] = set()
    for inst in instances:
        inp, out = inst.input.strip(), inst.output.strip()
        if not out or is_placeholder(out) or not re.search(r"[^\W_]", out):
            drops["empty_output"] += 1
        elif instruction and _same_text(out, instruction):
            drops["output_repeats_instruction"] += 1
        elif len(inp) > cfg.max_field_chars or len(out) > cfg.max_field_chars:
            drops["too_long"] += 1
        elif inp and inp == out:
            drops["input_equals_output"] += 1
        elif (inp, out) in seen:
            drops["duplicate_instance"] += 1
        else:
            seen.add((inp, out))
            candidates.append(Instance(inp, out))
    outputs_per_input: dict[str, set[str]] = {}
    for inst in candidates:
        outputs_per_input.setdefault(inst.input, set()).add(inst.output)
    kept = []
    for inst in candidates:
        if inst.input and len(outputs_per_input[inst.input]) > 1:
            drops["conflicting_outputs"] += 1
        else:
            kept.append(inst)
    return kept, drops
