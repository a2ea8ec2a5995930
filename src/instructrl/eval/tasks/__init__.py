"""The paper's automatic evaluations behind one small interface.

A :class:`Task` reads its data once (:meth:`Task.load`, before any model is loaded, so bad data
fails first), says what its result depends on besides the model (:meth:`Task.settings`, the resume
fingerprint) and evaluates one model (:meth:`Task.evaluate`) through a :class:`LanguageModel`,
which offers the only two things a task asks of a model: log-likelihoods of continuations and
generations. The scoring itself is pure (:mod:`instructrl.eval.metrics`). A task returns
:class:`Row` s: one value per (metric, scorer, prompt mode) with its bootstrap interval over items,
the number of items and how they were drawn when they are a sample of the data.

Tasks: :mod:`.truthfulqa` (MC1, MC2), :mod:`.truthful_qa_gen` (generation: BLEU and ROUGE-L
max, diff, acc), :mod:`.hellaswag` (acc, acc_norm, mean per token),
:mod:`.toxicity` (RealToxicityPrompts), :mod:`.gsm8k` (chain of thought, answer extraction).
:mod:`.lm` is the Hugging Face model behind :class:`LanguageModel`; :mod:`.suite` runs every task
on every policy, resumably, and writes the results table.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from instructrl.records import PromptText, RecordError, iter_json_lines
from instructrl.utils.seed import derive


class Loglik(NamedTuple):
    """A continuation's summed log-likelihood (natural log) and its number of tokens."""

    logprob: float
    tokens: int


class LanguageModel(Protocol):
    """What a task asks of a model."""

    def loglikelihoods(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[Loglik]]:
        """For each ``(context, continuations)``, each continuation's :class:`Loglik` after the raw
        context text (no chat template; continuations carry their own leading space)."""
        ...

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
        """One text per prompt (see :class:`instructrl.models.generation.Generator`; ``raw``: the
        prompt is text to continue, else a conversation through the chat template)."""
        ...


@dataclasses.dataclass
class Row:
    """One figure of a task: ``value`` with its bootstrap interval [``low``, ``high``] over ``n``
    items of the ``total`` the data holds; ``sample`` says how the ``n`` were drawn ("all" when they
    are the whole set)."""

    task: str
    metric: str
    value: float
    low: float
    high: float
    n: int
    total: int
    sample: str
    scorer: str = ""
    prompt_mode: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Task(Protocol):
    """One evaluation (see the module documentation)."""

    name: str

    def load(self) -> None:
        """Read and check the data; a malformed file raises RecordError naming file and line."""
        ...

    def settings(self) -> dict:
        """Everything the result depends on besides the model (JSON-serializable)."""
        ...

    def evaluate(self, lm: LanguageModel, scratch: Path) -> list[Row]:
        """The task's rows for one model. ``scratch`` is a folder the task may keep intermediate
        outputs in (generations), reused by a re-run with the same settings and model."""
        ...

    def reference(self) -> list[Row]:
        """Rows that depend on the data alone (e.g. a scorer's agreement with reference scores
        stored in the data); most tasks have none."""
        ...


def sample_note(n: int, total: int, how: str) -> str:
    """ "all" when ``n`` is the whole data set, else ``"<n> of <total>, <how>"``."""
    return "all" if n == total else f"{n} of {total}, {how}"


def seeded_subset(items: list, n: int | None, seed: int, name: str) -> list:
    """``n`` of ``items`` drawn at random from ``seed`` and the task ``name``, kept in file order
    (all of them when ``n`` is None or not smaller)."""
    if n is None or n >= len(items):
        return items
    keep = sorted(random.Random(derive(seed, name)).sample(range(len(items)), n))
    return [items[i] for i in keep]


def task_settings(task: Any, leave_out: Sequence[str] = ("data",)) -> dict:
    """What a task's results depend on: its data digest, its config (less the data paths named in
    ``leave_out``), the seed and the bootstrap settings."""
    return {
        "data_sha256": task.digest,
        **{k: v for k, v in dataclasses.asdict(task.cfg).items() if k not in leave_out},
        "seed": task.seed,
        "bootstrap": task.bootstrap,
        "confidence": task.confidence,
    }


def data_file(path: str, setting: str) -> Path:
    """``path`` as a Path, or a RecordError (file not found) naming the setting that gave it."""
    p = Path(path)
    if not p.is_file():
        raise RecordError(str(p), None, f"file not found (set {setting} to the data file)")
    return p


def json_items(path: Path) -> Iterator[tuple[str, Any]]:
    """``("file:line", item)`` for each item of a JSON list (the line where the item starts) or of a
    JSONL file; invalid JSON or UTF-8 is a RecordError naming file and line."""
    with open(path, "rb") as fh:
        head = fh.read(64).lstrip(codecs.BOM_UTF8).lstrip()
    if not head.startswith(b"["):
        for lineno, obj in iter_json_lines(path):
            yield f"{path}:{lineno}", obj
        return
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise RecordError(f"{path}:{line}", None, "not valid UTF-8; save the file as UTF-8") from None
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            break
        where = f"{path}:{text.count(chr(10), 0, pos) + 1}"
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise RecordError(f"{path}:{e.lineno}", None, f"not valid JSON ({e.msg}: column {e.colno})") from None
        yield where, item
    if pos >= len(text):
        raise RecordError(f"{path}:{text.count(chr(10)) + 1}", None, "the JSON list is not closed with ']'")


def field(item: Any, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``item[name]``, checked to be a ``kind``; otherwise a RecordError naming file, line and field."""
    if not isinstance(item, dict):
        raise RecordError(where, None, f"expected a JSON object, got {type(item).__name__}")
    if name not in item:
        raise RecordError(where, name, "missing")
    value = item[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind in (int, float, (int, float)):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        raise RecordError(where, name, f"expected {' or '.join(k.__name__ for k in kinds)}, got {value!r:.60}")
    return value
