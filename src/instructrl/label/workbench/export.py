"""Export: a project's labels as the records the training stages read, streamed.

* ``Ranking`` (``instructrl rm``): the prompt, its responses in the imported order, the ranks as
  entered (equal ranks are ties), Likert scores and the Table 3 flags, the labeler's user name; in
  ``meta`` the prompt id, the instruction version the label was made under, when the page was opened
  and when it was submitted, the label's schema version, and the policies and sample ids.
* ``Demonstration`` (``instructrl sft``): the prompt and the written response.
* Skips (plain JSON objects): the item, the labeler, the reason, the instruction version.

Each is a generator over a server-side cursor (:meth:`instructrl.web.db.Database.stream`): a
project of any size is exported in bounded memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select

from instructrl.label.workbench.config import ExportConfig
from instructrl.label.workbench.imports import project_in_org
from instructrl.records import Demonstration, Ranking, to_dict, write_jsonl
from instructrl.web.db import Database, iso
from instructrl.web.models import InstructionVersion, Label, Project, Task, User

EXPORTS = ("rankings", "demonstrations", "skips")


def _labels(kind: str | None, project_id: int, skipped: bool) -> Any:
    statement = (
        select(Label, Task, User.username, InstructionVersion.version)
        .join(Task, Task.id == Label.task_id)
        .join(User, User.id == Label.user_id)
        .outerjoin(InstructionVersion, InstructionVersion.id == Label.instruction_version_id)
        .where(Label.project_id == project_id)
        .where(Label.skip_reason.is_not(None) if skipped else Label.skip_reason.is_(None))
        .order_by(Label.id)
    )
    return statement if kind is None else statement.where(Label.kind == kind)


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


def demonstration_record(
    label: Label, task: Task, username: str, project: str, instruction_version: int | None
) -> Demonstration:
    meta = _meta(label, task, project, instruction_version)
    meta["labeler_id"] = username
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
    """Records of one export (``rankings``, ``demonstrations`` or ``skips``), oldest label first."""
    with db.read() as session:
        project = session.get(Project, project_id).name
    if what == "rankings":
        rows, build = db.stream(_labels("rank", project_id, skipped=False)), ranking_record
    elif what == "demonstrations":
        rows, build = db.stream(_labels("demonstrate", project_id, skipped=False)), demonstration_record
    elif what == "skips":
        rows, build = db.stream(_labels(None, project_id, skipped=True)), skip_record
    else:
        raise ValueError(f"unknown export {what!r}; one of {', '.join(EXPORTS)}")
    for label, task, username, version in rows:
        yield build(label, task, username, project, version)


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


def export_project(db: Database, project_id: int, out_dir: str | Path) -> dict[str, Path]:
    """Write every export of the project to ``out_dir/<name>.jsonl`` (each atomically)."""
    return {what: write_jsonl(Path(out_dir) / f"{what}.jsonl", iter_export(db, project_id, what)) for what in EXPORTS}


def find_project(db: Database, cfg: ExportConfig) -> int:
    with db.read() as session:
        return project_in_org(session, cfg.org, cfg.project).id
