"""The agreement dashboard and gold items: reading a project's labels for :mod:`.agreement`, and the admin's
pages for them.

* ``GET /admin/projects/{id}/agreement``: the page (pairwise agreement with its interval, alpha,
  per-labeler agreement with the consensus and with gold, throughput, the least agreed items);
  ``.../agreement.json`` the same numbers as JSON; ``instructrl label export`` writes them to
  ``agreement.json``.
* ``GET /admin/projects/{id}/items/{task_id}``: one item with every label it got; there an admin marks
  its gold ranking (typed, or taken from one of the labels) or clears it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from instructrl.label.workbench.admin import org_project
from instructrl.label.workbench.agreement import BOOTSTRAP, RankLabel, Report, Timing, report
from instructrl.label.workbench.schema import FLAGS, letter
from instructrl.records import atomic_write_text
from instructrl.web.auth import Viewer, require_admin
from instructrl.web.db import Database, InputError, utcnow
from instructrl.web.models import Label, Project, Task, User
from instructrl.web.pages import render

router = APIRouter()

FLAG_TEXT = {name: text for name, text, _ in FLAGS}


# ------------------------------------------------------------------------------------ reading


def _rank_label(label: Label, username: str) -> RankLabel:
    payload = label.payload or {}
    return RankLabel(
        item=label.task_id,
        labeler=username,
        ranks=tuple(payload.get("ranks", ())),
        likert=tuple(payload.get("likert", ())),
        flags=tuple(payload.get("flags", ())),
    )


def gather(db: Database, project_id: int) -> tuple[list[RankLabel], dict[int, list[int]], list[Timing]]:
    """The project's rankings of items that two or more labelers ranked or that are gold, the gold
    rankings, and the timing of every label (each streamed from the database, never a whole table)."""
    overlapping = (
        select(Label.task_id)
        .where(Label.project_id == project_id, Label.kind == "rank", Label.skip_reason.is_(None))
        .group_by(Label.task_id)
        .having(func.count() >= 2)
    )
    gold_tasks = select(Task.id).where(Task.project_id == project_id, Task.gold.is_not(None))
    labels = [
        _rank_label(label, username)
        for label, username in db.stream(
            select(Label, User.username)
            .join(User, User.id == Label.user_id)
            .where(Label.project_id == project_id, Label.kind == "rank", Label.skip_reason.is_(None))
            .where(Label.task_id.in_(overlapping) | Label.task_id.in_(gold_tasks))
            .order_by(Label.task_id, Label.id)
        )
    ]
    gold_rows = db.stream(select(Task.id, Task.gold).where(Task.id.in_(gold_tasks)))
    gold = {task_id: list(ranks) for task_id, ranks in gold_rows}
    timings = [
        Timing(username, opened, submitted, skipped)
        for username, opened, submitted, skipped in db.stream(
            select(User.username, Label.opened_at, Label.created_at, Label.skip_reason.is_not(None))
            .join(User, User.id == Label.user_id)
            .where(Label.project_id == project_id)
        )
    ]
    return labels, gold, timings


def project_report(db: Database, project_id: int, n_boot: int = BOOTSTRAP, seed: int = 0) -> Report:
    labels, gold, timings = gather(db, project_id)
    return report(labels, gold, timings, n_boot=n_boot, seed=seed)


def report_json(db: Database, project: Project, n_boot: int = BOOTSTRAP) -> dict[str, Any]:
    return {"project": project.name, "project_id": project.id, **project_report(db, project.id, n_boot).to_dict()}


def write_report(db: Database, project_id: int, path: str | Path) -> Path:
    """``agreement.json`` of a project (written atomically)."""
    with db.read() as session:
        project = session.get(Project, project_id)
    path = Path(path)
    atomic_write_text(path, json.dumps(report_json(db, project), indent=2, ensure_ascii=False) + "\n")
    return path


# ------------------------------------------------------------------------------------ gold


def check_gold(ranks: list[Any], k: int) -> list[int]:
    """A gold ranking: one rank from 1 to k per output (equal ranks tie)."""
    if len(ranks) != k or not all(isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= k for r in ranks):
        raise InputError(f"A gold ranking gives every one of the {k} outputs a rank from 1 to {k}.")
    return list(ranks)


def set_gold(session: Session, task: Task, ranks: list[int] | None) -> None:
    """Mark ``task`` gold with ``ranks`` (imported order), or clear it with None."""
    if task.kind != "rank":
        raise InputError("Only rate-and-rank items have a gold ranking.")
    task.gold = None if ranks is None else check_gold(ranks, len(task.responses))
    task.gold_at = None if ranks is None else utcnow()


def _project_task(db: Database, viewer: Viewer, project_id: int, task_id: int) -> tuple[Project, Task]:
    project = org_project(db, viewer, project_id)
    with db.read() as session:
        task = session.get(Task, task_id)
    if task is None or task.project_id != project.id:
        raise HTTPException(404)
    return project, task


def _item_labels(db: Database, task_id: int) -> list[dict]:
    with db.read() as session:
        rows = session.execute(
            select(Label, User.username, User.display_name)
            .join(User, User.id == Label.user_id)
            .where(Label.task_id == task_id)
            .order_by(Label.id)
        ).all()
    return [{"label": label, "username": username, "name": name or username} for label, username, name in rows]


def _item_page(request: Request, project: Project, task: Task, error: str | None = None, status_code: int = 200):
    labels = _item_labels(request.app.state.db, task.id)
    outputs = [{"index": i, "letter": letter(i), "text": r["text"]} for i, r in enumerate(task.responses or [])]
    return render(
        request,
        "admin_item.html",
        status_code=status_code,
        project=project,
        task=task,
        outputs=outputs,
        labels=labels,
        flag_text=FLAG_TEXT,
        error=error,
    )


@router.get("/admin/projects/{project_id}/items/{task_id}")
def item_page(request: Request, project_id: int, task_id: int, viewer: Viewer = Depends(require_admin)) -> Response:
    project, task = _project_task(request.app.state.db, viewer, project_id, task_id)
    return _item_page(request, project, task)


@router.post("/admin/projects/{project_id}/items/{task_id}/gold")
async def gold_post(request: Request, project_id: int, task_id: int, viewer: Viewer = Depends(require_admin)):
    form = await request.form()
    fields = {name: str(form.get(name, "")) for name in form.keys()}
    return await run_in_threadpool(_gold, request, viewer, project_id, task_id, fields)


def _gold(request: Request, viewer: Viewer, project_id: int, task_id: int, fields: dict[str, str]) -> Response:
    db = request.app.state.db
    project, task = _project_task(db, viewer, project_id, task_id)
    try:
        if fields.get("clear") == "1":
            ranks = None
        elif fields.get("from_label", "").isdigit():
            with db.read() as session:
                label = session.get(Label, int(fields["from_label"]))
            if label is None or label.task_id != task.id or label.payload is None:
                raise InputError("That label is not a ranking of this item.")
            ranks = list(label.payload["ranks"])
        else:
            raw = [fields.get(f"gold_{i}", "").strip() for i in range(len(task.responses or []))]
            ranks = [int(r) if r.isdigit() else -1 for r in raw]
        with db.write() as session:
            set_gold(session, session.get(Task, task.id), ranks)
    except InputError as e:
        return _item_page(request, project, task, error=str(e), status_code=400)
    return RedirectResponse(f"/admin/projects/{project.id}/items/{task.id}", status_code=303)


# ------------------------------------------------------------------------------------ the dashboard


def _prompts(db: Database, task_ids: list[int]) -> dict[int, Any]:
    if not task_ids:
        return {}
    with db.read() as session:
        return dict(session.execute(select(Task.id, Task.prompt).where(Task.id.in_(task_ids))).all())


@router.get("/admin/projects/{project_id}/agreement.json")
def agreement_json(request: Request, project_id: int, viewer: Viewer = Depends(require_admin)) -> Response:
    db = request.app.state.db
    project = org_project(db, viewer, project_id)
    return JSONResponse(report_json(db, project), headers={"Cache-Control": "no-store"})


@router.get("/admin/projects/{project_id}/agreement")
def agreement_page(request: Request, project_id: int, viewer: Viewer = Depends(require_admin)) -> Response:
    db = request.app.state.db
    project = org_project(db, viewer, project_id)
    result = project_report(db, project.id)
    with db.read() as session:
        gold_ids = list(
            session.scalars(select(Task.id).where(Task.project_id == project.id, Task.gold.is_not(None)).limit(200))
        )
    prompts = _prompts(db, [row.item for row in result.items] + gold_ids)
    return render(
        request,
        "agreement.html",
        project=project,
        report=result,
        prompts=prompts,
        gold_ids=gold_ids,
        flag_text=FLAG_TEXT,
    )
