"""The labeler's pages: the queue, a rate-and-rank task, a write-a-demonstration task, a write-a-prompt task,
skip, drafts.

A labeler reaches an assignment only through its id, and every lookup checks that it is theirs (and in
their organization): anyone else's answers 404, which tells nothing about whether it exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from instructrl.label.workbench.schema import (
    CATEGORY_NAMES,
    FLAGS,
    KINDS,
    MAX_EXAMPLES,
    PRIORITIES,
    PROMPT_KINDS,
    SCHEMA_VERSION,
    check_skip_reason,
    clean_draft,
    letter,
    parse_demonstration,
    parse_prompt_form,
    parse_rank_form,
)
from instructrl.web.auth import Viewer, current_viewer
from instructrl.web.db import Database, iso, utcnow
from instructrl.web.models import Assignment, Draft, InstructionVersion, Label, Project, Task
from instructrl.web.pages import render

router = APIRouter()


@dataclass
class Work:
    """An assignment of the viewer with its task and project (read in one session, used after it)."""

    assignment: Assignment
    task: Task
    project: Project


def load_work(db: Database, viewer: Viewer, assignment_id: int) -> Work:
    with db.read() as session:
        row = session.execute(
            select(Assignment, Task, Project)
            .join(Task, Task.id == Assignment.task_id)
            .join(Project, Project.id == Task.project_id)
            .where(Assignment.id == assignment_id)
        ).first()
    if row is None or row[0].user_id != viewer.id or row[2].org_id != viewer.org_id:
        raise HTTPException(404)
    return Work(*row)


def latest_instructions(db: Database, project_id: int) -> InstructionVersion | None:
    with db.read() as session:
        return session.scalar(
            select(InstructionVersion)
            .where(InstructionVersion.project_id == project_id)
            .order_by(InstructionVersion.version.desc())
            .limit(1)
        )


def _lock(session: Session, assignment_id: int) -> Assignment:
    """The assignment, locked until the transaction ends (SELECT ... FOR UPDATE on PostgreSQL; SQLite's
    writes are serialized anyway): a submit, a draft save and a first page view of one assignment take
    turns, so two of them never both see it open or both create its draft."""
    return session.get(Assignment, assignment_id, with_for_update=True)


def open_draft(db: Database, assignment_id: int) -> Draft:
    """The assignment's draft, created (with the time the page was first opened) if there is none."""
    with db.read() as session:
        draft = session.scalar(select(Draft).where(Draft.assignment_id == assignment_id))
    if draft is not None:
        return draft
    with db.write() as session:
        _lock(session, assignment_id)
        draft = session.scalar(select(Draft).where(Draft.assignment_id == assignment_id))
        if draft is None:
            now = utcnow()
            draft = Draft(assignment_id=assignment_id, payload={}, opened_at=now, updated_at=now)
            session.add(draft)
        return draft


def next_assignment(db: Database, viewer: Viewer, project_id: int | None = None) -> int | None:
    """The viewer's oldest open assignment (in ``project_id`` when given)."""
    with db.read() as session:
        statement = (
            select(Assignment.id)
            .join(Task, Task.id == Assignment.task_id)
            .join(Project, Project.id == Task.project_id)
            .where(Assignment.user_id == viewer.id, Assignment.status == "open", Project.org_id == viewer.org_id)
            .order_by(Assignment.id)
            .limit(1)
        )
        if project_id is not None:
            statement = statement.where(Task.project_id == project_id)
        return session.scalar(statement)


# ------------------------------------------------------------------------------------ queue


@router.get("/queue")
def queue(request: Request, viewer: Viewer = Depends(current_viewer)) -> Response:
    db = request.app.state.db
    with db.read() as session:
        counts = session.execute(
            select(Project.id, Project.name, Assignment.status, func.count())
            .join(Task, Task.project_id == Project.id)
            .join(Assignment, Assignment.task_id == Task.id)
            .where(Assignment.user_id == viewer.id, Project.org_id == viewer.org_id)
            .group_by(Project.id, Project.name, Assignment.status)
        ).all()
        open_items = session.execute(
            select(Assignment.id, Task.kind, Task.prompt, Project.name)
            .join(Task, Task.id == Assignment.task_id)
            .join(Project, Project.id == Task.project_id)
            .where(Assignment.user_id == viewer.id, Assignment.status == "open", Project.org_id == viewer.org_id)
            .order_by(Assignment.id)
            .limit(100)
        ).all()
    projects: dict[int, dict[str, Any]] = {}
    for project_id, name, status, count in counts:
        entry = projects.setdefault(project_id, {"id": project_id, "name": name, "open": 0, "done": 0, "skipped": 0})
        entry[status] = count
    return render(
        request,
        "queue.html",
        projects=sorted(projects.values(), key=lambda p: p["name"]),
        items=[{"id": a, "kind": k, "prompt": p, "project": n} for a, k, p, n in open_items],
        finished=request.query_params.get("finished") == "1",
    )


@router.get("/queue/next")
def queue_next(request: Request, project: int | None = None, viewer: Viewer = Depends(current_viewer)) -> Response:
    assignment_id = next_assignment(request.app.state.db, viewer, project)
    if assignment_id is None:
        return RedirectResponse("/queue?finished=1", status_code=303)
    return RedirectResponse(f"/tasks/{assignment_id}", status_code=303)


# ------------------------------------------------------------------------------------ a task


def _task_page(
    request: Request,
    work: Work,
    fields: dict[str, list[str]],
    errors: Sequence[str] = (),
    status_code: int = 200,
    instructions: InstructionVersion | None = None,
) -> Response:
    db = request.app.state.db
    instructions = instructions or latest_instructions(db, work.project.id)
    context: dict[str, Any] = {
        "work": work,
        "assignment": work.assignment,
        "task": work.task,
        "project": work.project,
        "priority": PRIORITIES.get(work.project.priority, ""),
        "instructions": instructions,
        "fields": fields,
        "errors": list(errors),
        "saved": request.query_params.get("saved") == "1",
    }
    if work.task.kind == "rank":
        order = work.assignment.order
        context["outputs"] = [
            {"position": p, "letter": letter(p), "text": work.task.responses[index]["text"]}
            for p, index in enumerate(order)
        ]
        context["flags"] = FLAGS
        return render(request, "rank.html", status_code=status_code, **context)
    if work.task.kind == "write_prompt":
        prompt_type = work.task.meta.get("prompt_type", "plain")
        filled = [
            int(name.split("_", 1)[1])
            for name, values in fields.items()
            if name.startswith(("query_", "answer_")) and name.split("_", 1)[1].isdigit() and any(values)
        ]
        context |= {
            "prompt_type": prompt_type,
            "about": PROMPT_KINDS.get(prompt_type, ""),
            "use_case": work.task.meta.get("use_case"),
            "categories": CATEGORY_NAMES,
            "pairs": min(MAX_EXAMPLES, max([2, *filled]) + 1),
            "max_pairs": MAX_EXAMPLES,
        }
        return render(request, "write_prompt.html", status_code=status_code, **context)
    return render(request, "demonstrate.html", status_code=status_code, **context)


@router.get("/tasks/{assignment_id}")
def task_page(request: Request, assignment_id: int, viewer: Viewer = Depends(current_viewer)) -> Response:
    db = request.app.state.db
    work = load_work(db, viewer, assignment_id)
    if work.assignment.status != "open":
        return render(request, "task_done.html", work=work, project=work.project)
    draft = open_draft(db, assignment_id)
    return _task_page(request, work, draft.payload or {})


def _form_fields(form: Any) -> dict[str, list[str]]:
    return {name: [v for v in form.getlist(name) if isinstance(v, str)] for name in form.keys()}


def instruction_version_of(db: Database, project_id: int, raw: list[str]) -> InstructionVersion | None:
    """The instruction version the page showed (sent back by the form), if it is one of this project's."""
    if len(raw) != 1 or not raw[0].isdigit():
        return None
    with db.read() as session:
        version = session.get(InstructionVersion, int(raw[0]))
    return version if version is not None and version.project_id == project_id else None


def save_label(
    db: Database, work: Work, viewer: Viewer, payload: dict | None, skip_reason: str | None, version
) -> bool:
    """Store the label and close the assignment in one transaction; False when it was already closed
    (a second submit of the same page, e.g. a retry after a lost connection)."""
    with db.write() as session:
        assignment = _lock(session, work.assignment.id)
        if assignment.status != "open":
            return False
        draft = session.scalar(select(Draft).where(Draft.assignment_id == assignment.id))
        now = utcnow()
        session.add(
            Label(
                assignment_id=assignment.id,
                task_id=work.task.id,
                project_id=work.project.id,
                user_id=viewer.id,
                kind=work.task.kind,
                payload=payload,
                schema_version=SCHEMA_VERSION,
                instruction_version_id=version.id if version else None,
                skip_reason=skip_reason,
                opened_at=draft.opened_at if draft else None,
                created_at=now,
            )
        )
        assignment.status = "skipped" if skip_reason is not None else "done"
        assignment.done_at = now
        if draft is not None:
            session.delete(draft)
    return True


def _after_save(db: Database, viewer: Viewer, project_id: int) -> Response:
    assignment_id = next_assignment(db, viewer, project_id)
    if assignment_id is None:
        return RedirectResponse("/queue?finished=1", status_code=303)
    return RedirectResponse(f"/tasks/{assignment_id}?saved=1", status_code=303)


@router.post("/tasks/{assignment_id}/submit")
async def submit(request: Request, assignment_id: int, viewer: Viewer = Depends(current_viewer)) -> Response:
    fields = _form_fields(await request.form())
    return await run_in_threadpool(_submit, request, assignment_id, viewer, fields)


def _submit(request: Request, assignment_id: int, viewer: Viewer, fields: dict[str, list[str]]) -> Response:
    db = request.app.state.db
    work = load_work(db, viewer, assignment_id)
    if work.task.kind not in KINDS:
        raise HTTPException(400, "Unknown kind of task.")
    if work.task.kind == "rank":
        payload, errors = parse_rank_form(fields, work.assignment.order)
    elif work.task.kind == "write_prompt":
        meta = work.task.meta or {}
        payload, errors = parse_prompt_form(fields, meta.get("prompt_type", "plain"), meta.get("use_case"))
    else:
        payload, errors = parse_demonstration((fields.get("response") or [""])[0])
    version = instruction_version_of(db, work.project.id, fields.get("instruction_version", []))
    if errors:
        return _task_page(request, work, fields, errors, status_code=400, instructions=version)
    save_label(db, work, viewer, payload, None, version)
    return _after_save(db, viewer, work.project.id)


@router.post("/tasks/{assignment_id}/skip")
async def skip(request: Request, assignment_id: int, viewer: Viewer = Depends(current_viewer)) -> Response:
    fields = _form_fields(await request.form())
    return await run_in_threadpool(_skip, request, assignment_id, viewer, fields)


def _skip(request: Request, assignment_id: int, viewer: Viewer, fields: dict[str, list[str]]) -> Response:
    db = request.app.state.db
    work = load_work(db, viewer, assignment_id)
    reason, errors = check_skip_reason((fields.get("skip_reason") or [""])[0])
    version = instruction_version_of(db, work.project.id, fields.get("instruction_version", []))
    if errors:
        with db.read() as session:
            draft = session.scalar(select(Draft).where(Draft.assignment_id == assignment_id))
        kept = dict(draft.payload) if draft and draft.payload else {}
        kept["skip_reason"] = fields.get("skip_reason", [""])
        return _task_page(request, work, kept, errors, status_code=400, instructions=version)
    save_label(db, work, viewer, None, reason, version)
    return _after_save(db, viewer, work.project.id)


@router.post("/tasks/{assignment_id}/draft")
async def save_draft(request: Request, assignment_id: int, viewer: Viewer = Depends(current_viewer)) -> Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    fields = clean_draft(body.get("fields") if isinstance(body, dict) else None)
    if fields is None:
        return JSONResponse({"detail": 'A draft is {"fields": {name: [values]}} of task fields.'}, status_code=400)
    return await run_in_threadpool(_save_draft, request.app.state.db, viewer, assignment_id, fields)


def _save_draft(db: Database, viewer: Viewer, assignment_id: int, fields: dict[str, list[str]]) -> Response:
    load_work(db, viewer, assignment_id)  # 404 unless it is the viewer's
    now = utcnow()
    with db.write() as session:
        # checked inside the write, so that a draft never outlives the submit that raced it
        if _lock(session, assignment_id).status != "open":
            return JSONResponse({"detail": "This item was already submitted."}, status_code=409)
        draft = session.scalar(select(Draft).where(Draft.assignment_id == assignment_id))
        if draft is None:
            session.add(Draft(assignment_id=assignment_id, payload=fields, opened_at=now, updated_at=now))
        else:
            draft.payload = fields
            draft.updated_at = now
    return JSONResponse({"saved_at": iso(now)})
