"""The workbench's JSON API for bot labelers: the simulated panel, the LLM judge or any script.

A bot is a workbench user like any labeler (an admin gives it tasks with ``label import``); it
authenticates with an API key of that user (``instructrl serve key create user=NAME``: the keys of the
web foundation, shared with the model API) sent as ``Authorization: Bearer <key>``, and sees exactly what
that user's queue holds, in its organization only. Its labels are stored as a person's are (same
validation, same instruction version, same exports and agreement dashboard), so one project can mix
people and bots and compare them.

- ``GET /api/label/v1/next[?project=ID]``: the oldest open assignment, ``{"assignment", "kind",
  "project": {"id", "name", "priority"}, "prompt", "meta", "responses": [{"position", "text",
  "finish_reason"}] (shuffled, as a person sees them), "instruction_version": {"id", "version", "text"}}``;
  204 when the queue is empty.
- ``POST /api/label/v1/tasks/{assignment}``: a rate-and-rank label ``{"likert": [..], "ranks": [..],
  "flags": [[names], ..]}`` (one entry per display position), a demonstration ``{"response": str}``, or a
  skip ``{"skip_reason": str}``; with ``"instruction_version": id`` (the one the bot read). 200
  ``{"status": "done"|"skipped"}``; 409 when the assignment was already closed (a retry of a submit whose
  answer was lost: nothing is stored twice); 400 with ``{"detail": [what is wrong]}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from instructrl.label.workbench.routes import (
    Work,
    instruction_version_of,
    latest_instructions,
    load_work,
    next_assignment,
    save_label,
)
from instructrl.label.workbench.schema import (
    FLAG_NAMES,
    check_skip_reason,
    parse_demonstration,
    parse_rank_form,
)
from instructrl.web.auth import Viewer
from instructrl.web.db import Database
from instructrl.web.keys import find_caller
from instructrl.web.models import Organization, User

PREFIX = "/api/label/v1/"
router = APIRouter(prefix="/api/label/v1")


def _viewer_of_key(db: Database, authorization: str | None) -> Viewer:
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "Send an API key as 'Authorization: Bearer <key>' (instructrl serve key create).")
    caller = find_caller(db, authorization[len("Bearer ") :].strip())
    if caller is None:
        raise HTTPException(401, "Unknown or revoked API key.")
    with db.read() as session:
        row = session.execute(
            select(User, Organization)
            .join(Organization, Organization.id == User.org_id)
            .where(User.id == caller.user_id)
        ).first()
    user, org = row
    if user.role not in ("labeler", "admin"):
        raise HTTPException(403, "Only labelers and admins label.")
    return Viewer(user.id, user.username, user.display_name, user.role, org.id, org.name, "")


def api_viewer(request: Request) -> Viewer:
    """The user whose key the request carries (a FastAPI dependency)."""
    return _viewer_of_key(request.app.state.db, request.headers.get("authorization"))


def _describe(db: Database, work: Work) -> dict[str, Any]:
    version = latest_instructions(db, work.project.id)
    task = work.task
    out: dict[str, Any] = {
        "assignment": work.assignment.id,
        "kind": task.kind,
        "project": {"id": work.project.id, "name": work.project.name, "priority": work.project.priority},
        "prompt": task.prompt,
        "meta": task.meta or {},
        "instruction_version": (
            {"id": version.id, "version": version.version, "text": version.text} if version is not None else None
        ),
    }
    if task.kind == "rank":
        out["responses"] = [
            {"position": p, "text": task.responses[i]["text"], "finish_reason": task.responses[i].get("finish_reason")}
            for p, i in enumerate(work.assignment.order)
        ]
        out["flags"] = list(FLAG_NAMES)
    return out


@router.get("/next")
def next_task(request: Request, project: int | None = None, viewer: Viewer = Depends(api_viewer)) -> Response:
    db = request.app.state.db
    assignment_id = next_assignment(db, viewer, project)
    if assignment_id is None:
        return Response(status_code=204)
    return JSONResponse(_describe(db, load_work(db, viewer, assignment_id)))


def _as_form(body: dict[str, Any], k: int) -> tuple[dict[str, list[str]], list[str]]:
    """A rate-and-rank JSON label as the page's form fields (so that one parser checks both)."""
    errors = []
    fields: dict[str, list[str]] = {}
    for name in ("likert", "ranks", "flags"):
        value = body.get(name, [] if name == "flags" else None)
        if name == "flags" and value == []:
            value = [[] for _ in range(k)]
        if not isinstance(value, list) or len(value) != k:
            errors.append(f"{name}: a list of {k} entries, one per response in the order shown.")
            continue
        for position, entry in enumerate(value):
            if name == "flags":
                if not isinstance(entry, list) or not all(isinstance(f, str) for f in entry):
                    errors.append(f"flags[{position}]: a list of flag names ({', '.join(FLAG_NAMES)}).")
                    continue
                fields[f"flags_{position}"] = list(entry)
            elif isinstance(entry, int) and not isinstance(entry, bool):
                fields[f"{'rank' if name == 'ranks' else 'likert'}_{position}"] = [str(entry)]
            else:
                errors.append(f"{name}[{position}]: an integer.")
    return fields, errors


@router.post("/tasks/{assignment_id}")
async def submit(request: Request, assignment_id: int, viewer: Viewer = Depends(api_viewer)) -> Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return JSONResponse({"detail": ["The body is a JSON object."]}, status_code=400)
    return await run_in_threadpool(_submit, request.app.state.db, viewer, assignment_id, body)


def _submit(db: Database, viewer: Viewer, assignment_id: int, body: dict[str, Any]) -> Response:
    work = load_work(db, viewer, assignment_id)  # 404 unless it is this user's
    raw_version = body.get("instruction_version")
    version = instruction_version_of(db, work.project.id, [str(raw_version)] if raw_version is not None else [])
    if work.assignment.status != "open":
        return JSONResponse({"detail": ["This item was already submitted."]}, status_code=409)
    payload, reason = None, None
    if "skip_reason" in body:
        raw = body["skip_reason"]
        reason, errors = check_skip_reason(raw) if isinstance(raw, str) else (None, ["skip_reason: a string."])
    elif work.task.kind == "rank":
        fields, errors = _as_form(body, len(work.assignment.order))
        if not errors:
            payload, errors = parse_rank_form(fields, work.assignment.order)
    elif work.task.kind == "demonstrate":
        raw = body.get("response")
        payload, errors = parse_demonstration(raw) if isinstance(raw, str) else (None, ["response: a string."])
    else:
        errors = [f"{work.task.kind} tasks are written in the browser; skip it with a skip_reason."]
    if errors:
        return JSONResponse({"detail": errors}, status_code=400)
    if not save_label(db, work, viewer, payload, reason, version):
        return JSONResponse({"detail": ["This item was already submitted."]}, status_code=409)
    return JSONResponse({"status": "skipped" if reason is not None else "done"})
