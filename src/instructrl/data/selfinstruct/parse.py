"""Parsing what the model wrote: numbered instruction lists, yes/no answers, and instances.

Parsers never raise on odd model output; they return what they could read and count the rest by
reason (``truncated``: cut by the token budget; ``unparseable``: not in the expected format).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

from instructrl.data.selfinstruct.filters import is_placeholder
from instructrl.data.selfinstruct.prompts import INPUT_FIRST_PREFIX, OUTPUT_FIRST_PREFIX, one_line
from instructrl.data.selfinstruct.tasks import Instance

_NUMBERED = re.compile(r"(?m)^[ \t]*\d+[ \t]*[.)][ \t]*")
_LABEL = re.compile(r"(?i)^(?:task|instruction)\s*\d*\s*:\s*")


@dataclasses.dataclass
class ParsedInstruction:
    text: str
    truncated: bool = False  # the last item of a continuation that hit the token budget


def parse_instruction_list(
    text: str, *, start: int | None, truncated: bool, max_items: int
) -> tuple[list[ParsedInstruction], int]:
    """Read the new instructions from a list continuation.

    ``start`` is the number the prompt ended with (``9`` for a prompt ending in ``"9."``): the text
    continues that item. ``start=None`` for a chat answer, which numbers its own items (anything
    before the first number is a preamble and is ignored). When ``truncated`` (the generation ran
    out of tokens), the last item is marked truncated. Returns the items (at most ``max_items``)
    and how many further items were left out.
    """
    if start is not None:
        text = f"{start}." + text
    parts = _NUMBERED.split(text)[1:]
    items = [ParsedInstruction(_LABEL.sub("", one_line(p))) for p in parts]
    if truncated and items:
        items[-1].truncated = True
    return items[:max_items], max(0, len(items) - max_items)


def parse_yes_no(text: str) -> bool | None:
    """The first word as yes (True) or no (False); None when it is neither."""
    words = re.findall(r"[a-z]+", text.lower())
    if not words:
        return None
    return {"yes": True, "no": False}.get(words[0])


def _no_input(text: str) -> str:
    s = text.strip()
    return "" if is_placeholder(s) else s


_INSTANCE_MARK = re.compile(r"(?im)^[ \t]*(?:(example)[ \t]*\d*[ \t]*:?[ \t]*$|(input)[ \t]*:|(output)[ \t]*:)")
_CLASS_MARK = re.compile(r"(?im)^[ \t]*(?:(class[ \t]*label)[ \t]*:|(input)[ \t]*:|(output)[ \t]*:)")


def _segments(pattern: re.Pattern, names: list[str], text: str) -> list[tuple[str, str]]:
    """``(kind, content)`` for each marker at the start of a line; ``kind`` names the group that matched."""
    marks = list(pattern.finditer(text))
    out = []
    for k, m in enumerate(marks):
        kind = names[next(i for i, g in enumerate(m.groups()) if g is not None)]
        end = marks[k + 1].start() if k + 1 < len(marks) else len(text)
        out.append((kind, text[m.end() : end].strip()))
    return out


def parse_input_first(text: str, *, truncated: bool, prefixed: bool = True) -> tuple[list[Instance], Counter]:
    """Instances from ``Example N / Input: ... / Output: ...`` text (input ``none`` means no input).

    ``prefixed``: the prompt ended with :data:`INPUT_FIRST_PREFIX`, so the text continues it.
    """
    if prefixed:
        text = INPUT_FIRST_PREFIX + text
    drops: Counter = Counter()
    instances: list[Instance] = []
    current: str | None = None
    segs = _segments(_INSTANCE_MARK, ["example", "input", "output"], text)
    for kind, content in segs:
        if kind == "example":
            if current is not None:
                drops["unparseable"] += 1  # an input without an output
            current = None
        elif kind == "input":
            if current is not None:
                drops["unparseable"] += 1
            current = content
        else:
            instances.append(Instance(_no_input(current or ""), content))
            current = None
    if truncated:
        if segs and segs[-1][0] == "output" and instances:
            instances.pop()
        drops["truncated"] += 1
    elif current is not None:
        drops["unparseable"] += 1
    if not segs and text.strip():
        drops["unparseable"] += 1
    return instances, drops


def parse_output_first(text: str, *, truncated: bool, prefixed: bool = True) -> tuple[list[Instance], Counter]:
    """Instances from ``Class label: ... / Input: ...`` text: the label is the output (an ``Output:``
    line that a model adds after an input is ignored).

    ``prefixed``: the prompt ended with :data:`OUTPUT_FIRST_PREFIX`, so the text continues it.
    """
    if prefixed:
        text = OUTPUT_FIRST_PREFIX + text
    drops: Counter = Counter()
    instances: list[Instance] = []
    label: str | None = None
    used = False
    segs = _segments(_CLASS_MARK, ["label", "input", "output"], text)
    for kind, content in segs:
        if kind == "output":  # an "Output:" line after an input repeats the label: not part of the input
            continue
        if kind == "label":
            if label is not None and not used:
                drops["unparseable"] += 1  # a label without an input
            label, used = one_line(content), False
        elif label is None:
            drops["unparseable"] += 1  # an input before any label
        else:
            instances.append(Instance(_no_input(content), label))
            used = True
    if truncated:
        if segs and segs[-1][0] == "input" and instances:
            instances.pop()
        drops["truncated"] += 1
    elif label is not None and not used:
        drops["unparseable"] += 1
    return instances, drops


_TASK_MARK = re.compile(r"(?im)^[ \t]*#+[ \t]*task[ \t]*\d+[ \t]*:?[ \t]*$")
_FIELD_MARK = re.compile(r"(?im)^[ \t]*(instruction|input|output)[ \t]*:")


@dataclasses.dataclass
class ParsedTask:
    instruction: str
    instance: Instance | None  # None when the input/output part could not be read
    truncated: bool = False


def parse_single_step(text: str, *, start: int | None, truncated: bool, max_items: int) -> tuple[list[ParsedTask], int]:
    """Whole tasks from ``### Task N / Instruction: / Input: / Output:`` text.

    ``start``: the prompt ended with ``### Task {start}\\nInstruction:``, so the text continues it
    (None for a chat answer). Returns at most ``max_items`` tasks and how many more were left out.
    """
    if start is not None:
        text = f"### Task {start}\nInstruction:" + text
    blocks = [b for b in _TASK_MARK.split(text)[1:] if b.strip()]
    tasks = []
    for block in blocks:
        fields: dict[str, str] = {}
        marks = list(_FIELD_MARK.finditer(block))
        for k, m in enumerate(marks):
            end = marks[k + 1].start() if k + 1 < len(marks) else len(block)
            fields.setdefault(m.group(1).lower(), block[m.end() : end].strip())
        instruction = one_line(fields.get("instruction", ""))
        instance = Instance(_no_input(fields.get("input", "")), fields["output"]) if "output" in fields else None
        tasks.append(ParsedTask(instruction, instance))
    if truncated and tasks:
        tasks[-1].truncated = True
    return tasks[:max_items], max(0, len(tasks) - max_items)
