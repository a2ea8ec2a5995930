"""The on-disk records every stage shares, and JSONL read/write.

A record is one JSON object per line. Reading checks every field and fails with
``file:line: field 'x': reason`` (:class:`RecordError`); writing goes to a temporary file in the
same directory that is renamed into place, so a killed writer never leaves half a file.

Chat messages are ``{"role": "system"|"user"|"assistant", "content": str}``. A prompt is either
plain text or a list of messages (a multi-turn conversation that ends with a user turn).
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import gzip
import io
import json
import os
import tempfile
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

SOURCES = ("labeler", "api", "playground", "selfinstruct", "import", "simulated")
PROMPT_TYPES = ("plain", "few-shot", "user-based", "chat")
CATEGORIES = (
    "generation",
    "open_qa",
    "brainstorming",
    "chat",
    "rewrite",
    "summarization",
    "classification",
    "closed_qa",
    "extraction",
    "other",
)
ROLES = ("system", "user", "assistant")

Message = dict  # {"role": ..., "content": ...}
PromptText = str | list  # plain text or a list of messages

R = TypeVar("R")


class RecordError(ValueError):
    """A malformed record: ``file:line: field 'name': reason``."""

    def __init__(self, where: str, field: str | None, reason: str):
        self.where, self.field, self.reason = where, field, reason
        msg = f"{where}: field '{field}': {reason}" if field else f"{where}: {reason}"
        super().__init__(msg)


# --------------------------------------------------------------------------- validation helpers


def check_messages(value: Any, field: str, *, final_role: str | None = None) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{field}: expected a non-empty list of chat messages")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or set(m) - {"role", "content", "name"} or "role" not in m or "content" not in m:
            raise ValueError(f"{field}[{i}]: a message is an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise ValueError(f"{field}[{i}].role: {m['role']!r} is not one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise ValueError(f"{field}[{i}].content: expected a string")
    if final_role and value[-1]["role"] != final_role:
        raise ValueError(f"{field}: the last message must be a {final_role} turn, got {value[-1]['role']!r}")
    return value


def prompt_messages(prompt: PromptText) -> list[dict]:
    """A prompt as chat messages (plain text becomes one user turn)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]


def prompt_text(prompt: PromptText) -> str:
    """A prompt flattened to text, for dedup, statistics and display."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


# --------------------------------------------------------------------------- records


@dataclasses.dataclass
class Prompt:
    """A prompt written by a labeler, sent to the API, typed in the playground or generated."""

    prompt: PromptText
    id: str = ""
    user_id: str = ""
    org_id: str | None = None
    source: str = "labeler"
    type: str = "plain"
    category: str | None = None
    lang: str | None = None
    split: str | None = None
    timestamp: str | None = None
    reference: str | None = None  # a reference answer where one exists
    constraints: list | None = None  # verifiable constraints, e.g. [{"kind": "max_words", "value": 50}]
    meta: dict = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        _check_prompt(self.prompt)
        _check_choice(self.source, SOURCES, "source")
        _check_choice(self.type, PROMPT_TYPES, "type")


@dataclasses.dataclass
class Demonstration:
    """A prompt and the response a labeler wrote for it.

    A few-shot demonstration instead carries an ``instruction`` and several ``examples``
    (``{"query", "response"}``); SFT turns it into several training points by sampling different
    subsets of the other examples as shots (see ``instructrl.sft.data.expand_few_shot``).
    """

    prompt: PromptText | None = None
    response: str | None = None
    id: str = ""
    user_id: str = ""
    category: str | None = None
    source: str = "labeler"
    type: str = "plain"
    instruction: str | None = None
    examples: list | None = None
    meta: dict = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        _check_choice(self.source, SOURCES, "source")
        _check_choice(self.type, PROMPT_TYPES, "type")
        if self.examples is not None or self.instruction is not None:
            if self.instruction is None or not isinstance(self.instruction, str):
                raise _FieldError("instruction", "a few-shot demonstration needs an instruction string")
            if not isinstance(self.examples, list) or len(self.examples) < 2:
                raise _FieldError("examples", "a few-shot demonstration needs at least 2 examples")
            for i, ex in enumerate(self.examples):
                if (
                    not isinstance(ex, dict)
                    or not isinstance(ex.get("query"), str)
                    or not isinstance(ex.get("response"), str)
                ):
                    raise _FieldError(f"examples[{i}]", "each example is an object with string 'query' and 'response'")
            return
        if self.prompt is None:
            raise _FieldError("prompt", "missing (or give 'instruction' and 'examples' for a few-shot demonstration)")
        _check_prompt(self.prompt)
        if not isinstance(self.response, str) or not self.response.strip():
            raise _FieldError("response", "expected a non-empty string")


@dataclasses.dataclass
class Ranking:
    """K responses to one prompt ranked by a labeler: rank 1 is best, equal ranks are ties.

    ``likert`` (1-7) and ``flags`` (metadata such as ``{"toxic": false, "hallucination": true}``)
    are per response where the labeler gave them.
    """

    prompt: PromptText
    responses: list
    ranks: list
    id: str = ""
    labeler_id: str = ""
    likert: list | None = None
    flags: list | None = None
    user_id: str = ""
    category: str | None = None
    meta: dict = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        _check_prompt(self.prompt)
        k = len(self.responses)
        if k < 2:
            raise _FieldError("responses", f"a ranking needs at least 2 responses, got {k}")
        if not all(isinstance(r, str) for r in self.responses):
            raise _FieldError("responses", "every response must be a string")
        if len(self.ranks) != k:
            raise _FieldError("ranks", f"expected {k} ranks (one per response), got {len(self.ranks)}")
        if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in self.ranks):
            raise _FieldError("ranks", "ranks are integers >= 1 (1 = best; equal ranks are ties)")
        if self.likert is not None:
            if len(self.likert) != k:
                raise _FieldError("likert", f"expected {k} scores, got {len(self.likert)}")
            if not all(s is None or (isinstance(s, int) and 1 <= s <= 7) for s in self.likert):
                raise _FieldError("likert", "Likert scores are integers from 1 to 7 (or null)")
        if self.flags is not None:
            if len(self.flags) != k or not all(isinstance(f, dict) for f in self.flags):
                raise _FieldError("flags", f"expected {k} objects of metadata flags")


@dataclasses.dataclass
class Comparison:
    """One pairwise preference: ``chosen`` was preferred to ``rejected`` (a K = 2 ranking)."""

    prompt: PromptText
    chosen: str
    rejected: str
    id: str = ""
    labeler_id: str = ""
    meta: dict = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        _check_prompt(self.prompt)

    def to_ranking(self) -> Ranking:
        return Ranking(
            prompt=self.prompt,
            responses=[self.chosen, self.rejected],
            ranks=[1, 2],
            id=self.id,
            labeler_id=self.labeler_id,
            meta=dict(self.meta),
        )


@dataclasses.dataclass
class Sample:
    """A response sampled from a policy, with what was measured about it."""

    prompt: PromptText
    response: str
    id: str = ""
    policy: str = ""
    score: float | None = None
    finish_reason: str | None = None  # "stop" (EOS) or "length"
    logprob: float | None = None
    meta: dict = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        _check_prompt(self.prompt)


RECORD_TYPES = {c.__name__.lower(): c for c in (Prompt, Demonstration, Ranking, Comparison, Sample)}


class _FieldError(ValueError):
    def __init__(self, field: str, reason: str):
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}")


def _check_prompt(value: Any) -> None:
    if isinstance(value, str):
        if not value.strip():
            raise _FieldError("prompt", "empty prompt")
        return
    try:
        check_messages(value, "prompt", final_role="user")
    except ValueError as e:
        raise _FieldError("prompt", str(e).split(": ", 1)[-1]) from None


def _check_choice(value: Any, choices: tuple, field: str) -> None:
    if value not in choices:
        raise _FieldError(field, f"{value!r} is not one of {', '.join(choices)}")


def _check_type(tp: Any, value: Any) -> bool:
    if tp is Any:
        return True
    origin = get_origin(tp)
    if origin is Union or isinstance(tp, type(int | None)):
        return any(_check_type(a, value) for a in get_args(tp))
    if tp is type(None):
        return value is None
    if origin is Literal:
        return value in get_args(tp)
    if origin is list or tp is list:
        return isinstance(value, list)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


_JSON_WORDS = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def _json_words(tp: Any) -> str:
    """A field's type in the words of JSON, as the file's author sees it: ``str | None`` -> 'a string or null'."""
    args = get_args(tp) if get_origin(tp) is Union or isinstance(tp, type(int | None)) else (tp,)
    words = [_JSON_WORDS.get(get_origin(a) or a, str(a)) for a in args]
    return " or ".join(dict.fromkeys(words))


def from_dict(cls: type[R], data: Any, where: str = "<record>") -> R:
    """Build and validate a record; errors name ``where`` and the field."""
    if not isinstance(data, dict):
        got = _JSON_WORDS.get(type(data), type(data).__name__)
        raise RecordError(where, None, f"expected a JSON object, got {got}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise RecordError(where, unknown[0], f"unknown field for {cls.__name__}; valid fields: {', '.join(fields)}")
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecordError(where, name, "missing")
            continue
        if not _check_type(hints[name], data[name]):
            raise RecordError(where, name, f"expected {_json_words(hints[name])}, got {json.dumps(data[name])[:60]}")
    rec = cls(**data)
    try:
        rec.validate()  # type: ignore[attr-defined]
    except _FieldError as e:
        raise RecordError(where, e.field, e.reason) from None
    return rec


def to_dict(rec: Any) -> dict:
    """A record as a JSON-ready dict, leaving out fields that are None or empty defaults."""
    out = {}
    for f in dataclasses.fields(rec):
        v = getattr(rec, f.name)
        if v is None or (f.name == "meta" and not v):
            continue
        out[f.name] = v
    return out


# --------------------------------------------------------------------------- JSONL I/O


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line_number, bytes)`` of a plain or gzipped file; a file that cannot be read (a directory,
    no permission, a corrupt or cut-off .gz) raises RecordError. Lines are read as bytes so that a
    byte that is not UTF-8 is reported with its line, not for the whole 8 KiB chunk around it."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as fh:
            yield from enumerate(fh, 1)
    except (OSError, EOFError) as e:
        raise RecordError(str(path), None, f"cannot read: {e}") from None


def iter_json_lines(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)`` for each non-blank line; bad JSON or bytes that are not UTF-8
    raise RecordError. A UTF-8 byte-order mark opening the file (Windows editors write one) is skipped."""
    path = Path(path)
    if not path.exists():
        raise RecordError(str(path), None, "file not found")
    for lineno, raw in _raw_lines(path):
        where = f"{path}:{lineno}"
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RecordError(
                where,
                None,
                f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the "
                "line); save the file as UTF-8",
            ) from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            cut = "" if raw.endswith(b"\n") else "; the file ends inside this line (was its writer stopped?)"
            raise RecordError(where, None, f"not valid JSON ({e.msg}: column {e.colno}){cut}") from None
        yield lineno, obj


def require_records(records: list[R], path: str | os.PathLike, what: str = "records") -> list[R]:
    """``records`` as they are, or a RecordError naming ``path`` when it held none: for input a stage
    cannot run without (an empty output of an earlier stage may be fine, so reading alone allows it)."""
    if not records:
        raise RecordError(
            str(path),
            None,
            f"no {what} in the file (it is empty or only blank lines); expected one JSON object per line",
        )
    return records


def read_jsonl(path: str | os.PathLike, cls: type[R]) -> list[R]:
    return list(iter_records(path, cls))


def iter_records(path: str | os.PathLike, cls: type[R]) -> Iterator[R]:
    for lineno, obj in iter_json_lines(path):
        yield from_dict(cls, obj, f"{path}:{lineno}")


@contextlib.contextmanager
def _atomic_file(path: str | os.PathLike) -> Iterator[io.BufferedWriter]:
    """A binary file that becomes ``path`` only when the block ends without an error: it is written
    beside ``path`` under a temporary name, synced and renamed, so a killed writer leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with _atomic_file(path) as fh:
        fh.write(text.encode("utf-8"))
    return Path(path)


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> Path:
    """Write records (dataclasses or dicts) atomically (``.gz``: gzip-compressed)."""
    path = Path(path)
    with _atomic_file(path) as raw:
        sink = gzip.GzipFile(fileobj=raw, mode="wb") if path.suffix == ".gz" else raw
        for rec in records:
            obj = to_dict(rec) if dataclasses.is_dataclass(rec) else rec
            sink.write((json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8"))
        if sink is not raw:
            sink.close()  # writes the gzip trailer; raw stays open for _atomic_file to sync
    return path


def append_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> None:
    """Append records and fsync (for append-only logs that must survive a kill)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        for rec in records:
            obj = to_dict(rec) if dataclasses.is_dataclass(rec) else rec
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
