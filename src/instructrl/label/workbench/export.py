"""Export: a project's labels as the records the training stages read, streamed.

* ``Ranking`` (``instructrl rm``): the prompt, its responses in the imported order, the ranks as
  entered (equal ranks are ties), Likert scores and the Table 3 flags, the labeler's user name; in
  ``meta`` the prompt id, the instruction version the label was made under, when the page was opened
  and when it was submitted, the label's schema version, and the policies and sample ids.
* ``Demonstration`` (``instructrl sft``): the prompt and the written response; and every few-shot prompt a
  labeler wrote, as its ``instruction`` and ``examples`` (SFT expands it into several training points).
* ``Prompt``: the prompts labelers wrote (source ``labeler``; type plain, few-shot or user-based; the
  use-case category; ``user_id`` the labeler; ``timestamp`` the submit); a few-shot prompt's text is its
  instruction and examples laid out as SFT lays out shots, and ``meta`` keeps the instruction and the
  examples themselves, a user-based one's ``meta.use_case`` the use case it was written for.
* Pairs (``Comparison``, which ``instructrl rm`` reads too): for every ranking, every pair of responses with
  a strict preference, chosen and rejected; ties are left out.
* Skips (plain JSON objects): the item, the labeler, the reason, the instruction version.
* A Hugging Face dataset on disk (``datasets``' ``save_to_disk``): one dataset per export under ``hf/``,
  built from the same records by a generator, so it too is written without holding the project in memory.

Each is a generator over a server-side cursor (:meth:`instructrl.web.db.Database.stream`): a
project of any size is exported in bounded memory.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select

from instructrl.label.workbench.config import EXPORT_FORMATS, ExportConfig
from instructrl.label.workbench.imports import project_in_org
from instructrl.label.workbench.schema import FLAG_NAMES
from instructrl.records import Comparison, Demonstration, Prompt, Ranking, prompt_messages, to_dict, write_jsonl
from instructrl.web.db import Database, iso
from instructrl.web.models import InstructionVersion, Label, Project, Task, User

RECORD_EXPORTS = ("rankings", "demonstrations", "prompts", "skips")  # format jsonl
EXPORTS = (*RECORD_EXPORTS, "pairs")  # every JSONL export (the admin's downloads)
HF_EXPORTS = ("rankings", "pairs", "demonstrations", "prompts")  # format hf: hf/<name>
FORMATS = EXPORT_FORMATS


def _labels(kind: str | tuple[str, ...] | None, project_id: int, skipped: bool) -> Any:
    statement = (
        select(Label, Task, User.username, InstructionVersion.version)
        .join(Task, Task.id == Label.task_id)
        .join(User, User.id == Label.user_id)
        .outerjoin(InstructionVersion, InstructionVersion.id == Label.instruction_version_id)
        .where(Label.project_id == project_id)
        .where(Label.skip_reason.is_not(None) if skipped else Label.skip_reason.is_(None))
        .order_by(Label.id)
    )
    if kind is None:
        return statement
    return statement.where(Label.kind.in_(kind) if isinstance(kind, tuple) else Label.kind == kind)


def _meta(label: Label, task: Task, project: str, instruction_version: int | None) -> dict:
    return {
        "prompt_id": task.external_id,
        "project": project,
        "task_id": task.id,
        "label_id": label.id,
        "instruction_version": instruction_version,
        "schema_version": label.schema_version,
        "opened_at": iso(label.opened_at),
        "submitted_at": iso(label.created_at),
    }


def ranking_record(label: Label, task: Task, username: str, project: str, instruction_version: int | None) -> Ranking:
    payload = label.payload
    meta = _meta(label, task, project, instruction_version)
    meta["policies"] = [r.get("policy", "") for r in task.responses]
    meta["sample_ids"] = [r.get("sample_id", "") for r in task.responses]
    return Ranking(
        prompt=task.prompt,
        responses=[r["text"] for r in task.responses],
        ranks=list(payload["ranks"]),
        id=f"wb-{label.id}",
        labeler_id=username,
        likert=list(payload["likert"]),
        flags=[dict(f) for f in payload["flags"]],
        user_id=task.meta.get("user_id", ""),
        category=task.meta.get("category"),
        meta=meta,
    )


def pair_records(
    label: Label, task: Task, username: str, project: str, instruction_version: int | None
) -> Iterator[Comparison]:
    """Every pair (i < j in the imported order) of one ranking with a strict preference; ties give none."""
    ranks = label.payload["ranks"]
    base = _meta(label, task, project, instruction_version)
    for i in range(len(ranks)):
        for j in range(i + 1, len(ranks)):
            if ranks[i] == ranks[j]:
                continue
            win, lose = (i, j) if ranks[i] < ranks[j] else (j, i)
            meta = dict(base)
            for side, index in (("chosen", win), ("rejected", lose)):
                meta[f"{side}_index"] = index
                meta[f"{side}_rank"] = ranks[index]
                meta[f"{side}_policy"] = task.responses[index].get("policy", "")
                meta[f"{side}_sample_id"] = task.responses[index].get("sample_id", "")
            yield Comparison(
                prompt=task.prompt,
                chosen=task.responses[win]["text"],
                rejected=task.responses[lose]["text"],
                id=f"wb-{label.id}-{i}-{j}",
                labeler_id=username,
                meta=meta,
            )


def few_shot_text(instruction: str, examples: list[dict]) -> str:
    """A few-shot prompt as one text: the instruction, then each example as SFT lays out its shots."""
    shots = "".join(f"Input: {e['query']}\nOutput: {e['response']}\n\n" for e in examples)
    return f"{instruction}\n\n{shots}".rstrip("\n")


def prompt_record(label: Label, task: Task, username: str, project: str, instruction_version: int | None) -> Prompt:
    payload = label.payload
    meta = _meta(label, task, project, instruction_version)
    meta["labeler_id"] = username
    if payload["type"] == "few-shot":
        text = few_shot_text(payload["instruction"], payload["examples"])
        meta["instruction"] = payload["instruction"]
        meta["examples"] = [dict(e) for e in payload["examples"]]
    else:
        text = payload["prompt"]
    if payload["type"] == "user-based":
        meta["use_case"] = payload.get("use_case", "")
    return Prompt(
        prompt=text,
        id=f"wb-{label.id}",
        user_id=username,
        source="labeler",
        type=payload["type"],
        category=payload["category"],
        timestamp=iso(label.created_at),
        meta=meta,
    )


def demonstration_record(
    label: Label, task: Task, username: str, project: str, instruction_version: int | None
) -> Demonstration | None:
    """A written demonstration, or a written few-shot prompt (its instruction and examples); None for a
    written prompt of another kind (those are only prompts)."""
    meta = _meta(label, task, project, instruction_version)
    meta["labeler_id"] = username
    if label.kind == "write_prompt":
        payload = label.payload
        if payload.get("type") != "few-shot":
            return None
        return Demonstration(
            id=f"wb-{label.id}",
            user_id=username,
            category=payload["category"],
            source="labeler",
            type="few-shot",
            instruction=payload["instruction"],
            examples=[dict(e) for e in payload["examples"]],
            meta=meta,
        )
    return Demonstration(
        prompt=task.prompt,
        response=label.payload["response"],
        id=f"wb-{label.id}",
        user_id=task.meta.get("user_id", ""),
        category=task.meta.get("category"),
        source="labeler",
        type=task.meta.get("type", "plain"),
        meta=meta,
    )


def skip_record(label: Label, task: Task, username: str, project: str, instruction_version: int | None) -> dict:
    return {
        "kind": task.kind,
        "labeler_id": username,
        "reason": label.skip_reason,
        "prompt": task.prompt,
        **_meta(label, task, project, instruction_version),
    }


def iter_export(db: Database, project_id: int, what: str) -> Iterator[Any]:
    """Records of one export (one of :data:`EXPORTS`), oldest label first."""
    with db.read() as session:
        project = session.get(Project, project_id).name
    if what == "rankings":
        rows, build = db.stream(_labels("rank", project_id, skipped=False)), ranking_record
    elif what == "demonstrations":
        kinds = ("demonstrate", "write_prompt")
        rows, build = db.stream(_labels(kinds, project_id, skipped=False)), demonstration_record
    elif what == "prompts":
        rows, build = db.stream(_labels("write_prompt", project_id, skipped=False)), prompt_record
    elif what == "pairs":
        rows = db.stream(_labels("rank", project_id, skipped=False))
        for label, task, username, version in rows:
            yield from pair_records(label, task, username, project, version)
        return
    elif what == "skips":
        rows, build = db.stream(_labels(None, project_id, skipped=True)), skip_record
    else:
        raise ValueError(f"unknown export {what!r}; one of {', '.join(EXPORTS)}")
    for label, task, username, version in rows:
        record = build(label, task, username, project, version)
        if record is not None:
            yield record


def jsonl_chunks(records: Iterable[Any], lines_per_chunk: int = 200) -> Iterator[str]:
    """Records as JSONL text, a few hundred lines per chunk (for a streamed HTTP response)."""
    chunk = []
    for record in records:
        chunk.append(json.dumps(record if isinstance(record, dict) else to_dict(record), ensure_ascii=False) + "\n")
        if len(chunk) >= lines_per_chunk:
            yield "".join(chunk)
            chunk = []
    if chunk:
        yield "".join(chunk)


def export_project(
    db: Database, project_id: int, out_dir: str | Path, formats: Iterable[str] = ("jsonl",)
) -> dict[str, Path]:
    """Write the project's exports in ``formats`` (:data:`FORMATS`): ``jsonl`` the records to
    ``out_dir/<name>.jsonl``, ``pairs`` to ``out_dir/pairs.jsonl`` (each atomically), ``hf`` a dataset per
    export under ``out_dir/hf/<name>``. Returns what was written, by name (``hf/pairs``, ...)."""
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format {unknown[0]!r}; one of {', '.join(FORMATS)}")
    names = (list(RECORD_EXPORTS) if "jsonl" in formats else []) + (["pairs"] if "pairs" in formats else [])
    out = Path(out_dir)
    written = {what: write_jsonl(out / f"{what}.jsonl", iter_export(db, project_id, what)) for what in names}
    if "hf" in formats:
        for what in HF_EXPORTS:
            written[f"hf/{what}"] = write_hf(db, project_id, what, out / "hf" / what)
    return written


# ------------------------------------------------------------------------------ Hugging Face datasets


def _message_feature() -> Any:
    from datasets import Value

    return [{"role": Value("string"), "content": Value("string")}]


def hf_features(what: str) -> Any:
    """The columns of one export's dataset. ``prompt`` is a list of chat messages (a text prompt is one
    user turn), as ``instructrl rm`` and TRL read a conversational prompt; ``meta`` is the record's JSON."""
    from datasets import Features, Value

    common = {
        "id": Value("string"),
        "labeler_id": Value("string"),
        "instruction_version": Value("int64"),
        "timestamp": Value("string"),
        "meta": Value("string"),
    }
    examples = [{"query": Value("string"), "response": Value("string")}]
    columns = {
        "pairs": {"prompt": _message_feature(), "chosen": Value("string"), "rejected": Value("string")}
        | {"chosen_rank": Value("int64"), "rejected_rank": Value("int64")},
        "rankings": {"prompt": _message_feature(), "responses": [Value("string")], "ranks": [Value("int64")]}
        | {"likert": [Value("int64")], "flags": [{name: Value("bool") for name in FLAG_NAMES}]},
        "demonstrations": {"prompt": _message_feature(), "response": Value("string"), "instruction": Value("string")}
        | {"examples": examples, "type": Value("string"), "category": Value("string"), "user_id": Value("string")},
        "prompts": {"prompt": Value("string"), "type": Value("string"), "category": Value("string")}
        | {"use_case": Value("string"), "instruction": Value("string"), "examples": examples}
        | {"user_id": Value("string"), "source": Value("string")},
    }[what]
    return Features(columns | common)


def _messages(prompt: Any) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in prompt_messages(prompt)]


def hf_row(what: str, record: Any) -> dict:
    """One record of an export as a row of its dataset (:func:`hf_features`)."""
    meta = record.meta
    row = {
        "id": record.id,
        "labeler_id": meta.get("labeler_id", getattr(record, "labeler_id", "")),
        "instruction_version": meta.get("instruction_version"),
        "timestamp": meta.get("submitted_at"),
        "meta": json.dumps(meta, ensure_ascii=False),
    }
    if what == "pairs":
        return row | {
            "prompt": _messages(record.prompt),
            "chosen": record.chosen,
            "rejected": record.rejected,
            "chosen_rank": meta["chosen_rank"],
            "rejected_rank": meta["rejected_rank"],
        }
    if what == "rankings":
        flags = [{name: f.get(name) for name in FLAG_NAMES} for f in record.flags or [{}] * len(record.responses)]
        return row | {
            "prompt": _messages(record.prompt),
            "responses": list(record.responses),
            "ranks": list(record.ranks),
            "likert": list(record.likert) if record.likert is not None else None,
            "flags": flags,
        }
    if what == "demonstrations":
        return row | {
            "prompt": _messages(record.prompt) if record.prompt is not None else [],
            "response": record.response,
            "instruction": record.instruction,
            "examples": record.examples,
            "type": record.type,
            "category": record.category,
            "user_id": record.user_id,
        }
    return row | {
        "prompt": record.prompt,
        "type": record.type,
        "category": record.category,
        "use_case": meta.get("use_case"),
        "instruction": meta.get("instruction"),
        "examples": meta.get("examples"),
        "user_id": record.user_id,
        "source": record.source,
    }


def _hf_rows(db_url: str, project_id: int, what: str) -> Iterator[dict]:
    """The generator ``datasets`` builds a dataset from (its arguments are plain values, so that the
    library can fingerprint them)."""
    db = Database(db_url)
    try:
        for record in iter_export(db, project_id, what):
            yield hf_row(what, record)
    finally:
        db.dispose()


def write_hf(db: Database, project_id: int, what: str, path: str | Path) -> Path:
    """One export as a Hugging Face dataset saved at ``path`` (``datasets.load_from_disk`` reads it). Rows
    stream from the database into Arrow files batch by batch (``Dataset.from_generator`` in a scratch
    cache beside ``path``, removed afterwards), then ``save_to_disk`` writes the dataset; the dataset of a
    previous export at ``path`` is replaced only once the new one is complete."""
    try:
        from datasets import Dataset
    except ImportError:
        raise ImportError("the hf export needs the 'datasets' package: pip install datasets") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        records = iter_export(db, project_id, what)
        empty = next(records, None) is None
        records.close()
        if empty:  # the library builds no dataset from a generator that yields nothing
            features = hf_features(what)
            dataset = Dataset.from_dict({name: [] for name in features}, features=features)
        else:
            dataset = Dataset.from_generator(
                _hf_rows,
                features=hf_features(what),
                cache_dir=str(scratch / "cache"),
                gen_kwargs={
                    "db_url": db.url.render_as_string(hide_password=False),
                    "project_id": project_id,
                    "what": what,
                },
            )
        # one shard at least: an empty dataset saved with none cannot be loaded back
        dataset.save_to_disk(str(scratch / "dataset"), num_shards=1 if empty else None)
        del dataset
        if path.exists():
            shutil.rmtree(path)
        (scratch / "dataset").rename(path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path


def find_project(db: Database, cfg: ExportConfig) -> int:
    with db.read() as session:
        return project_in_org(session, cfg.org, cfg.project).id
