"""The admin's pages of the workbench: projects, their instructions, import, progress and export.

Every page looks the project up inside the admin's own organization; another organization's project
answers 404.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from sqlalchemy import case, func, select
from starlette.concurrency import run_in_threadpool

from instructrl.label.workbench.export import EXPORTS, iter_export, jsonl_chunks
from instructrl.label.workbench.imports import (
    clean_use_cases,
    create_prompt_tasks,
    import_items,
    publish_instructions,
    read_demonstration_items,
    read_rank_items,
)
from instructrl.label.workbench.schema import IMPORT_KINDS, PRIORITIES, PROMPT_KINDS
from instructrl.records import RecordError
from instructrl.web.auth import Viewer, require_admin
from instructrl.web.db import Database, InputError
from instructrl.web.models import Assignment, InstructionVersion, Label, Project, Task, User
from instructrl.web.pages import render

router = APIRouter()

MAX_UPLOAD = 512 * 1024 * 1024  # bytes of one import file
RECENT = 10  # skips and demonstrations listed on a project's page, for the admin to read


def org_project(db: Database, viewer: Viewer, project_id: int) -> Project:
    with db.read() as session:
        project = session.get(Project, project_id)
    if project is None or project.org_id != viewer.org_id:
        raise HTTPException(404)
    return project


def _project_rows(db: Database, org_id: int) -> list[dict]:
    with db.read() as session:
        projects = list(session.scalars(select(Project).where(Project.org_id == org_id).order_by(Project.name)))
        tasks = dict(
            session.execute(
                select(Task.project_id, func.count())
                .join(Project, Project.id == Task.project_id)
                .where(Project.org_id == org_id)
                .group_by(Task.project_id)
            ).all()
        )
        statuses = session.execute(
            select(Task.project_id, Assignment.status, func.count())
            .join(Task, Task.id == Assignment.task_id)
            .join(Project, Project.id == Task.project_id)
            .where(Project.org_id == org_id)
            .group_by(Task.project_id, Assignment.status)
        ).all()
    counts: dict[int, dict[str, int]] = {}
    for project_id, status, count in statuses:
        counts.setdefault(project_id, {})[status] = count
    return [
        {
            "project": p,
            "tasks": tasks.get(p.id, 0),
            "open": counts.get(p.id, {}).get("open", 0),
            "done": counts.get(p.id, {}).get("done", 0),
            "skipped": counts.get(p.id, {}).get("skipped", 0),
        }
        for p in projects
    ]


@router.get("/admin")
def admin_home(viewer: Viewer = Depends(require_admin)) -> Response:
    return RedirectResponse("/admin/projects", status_code=303)


@router.get("/admin/projects")
def projects_page(request: Request, viewer: Viewer = Depends(require_admin)) -> Response:
    rows = _project_rows(request.app.state.db, viewer.org_id)
    return render(request, "admin_projects.html", rows=rows, priorities=PRIORITIES)


@router.post("/admin/projects")
def create_project(
    request: Request,
    name: str = Form(""),
    description: str = Form(""),
    priority: str = Form("helpfulness"),
    instructions: str = Form(""),
    viewer: Viewer = Depends(require_admin),
) -> Response:
    db = request.app.state.db
    name = name.strip()
    error = None
    if not name or len(name) > 200:
        error = "A project needs a name of at most 200 characters."
    elif priority not in PRIORITIES:
        error = "Choose what comes first for this project."
    else:
        with db.write() as session:
            taken = session.scalar(select(Project.id).where(Project.org_id == viewer.org_id, Project.name == name))
            if taken is None:
                project = Project(org_id=viewer.org_id, name=name, description=description.strip(), priority=priority)
                session.add(project)
                session.flush()
                publish_instructions(session, project.id, instructions, viewer.id)
                return RedirectResponse(f"/admin/projects/{project.id}", status_code=303)
        error = f"There is already a project called {name!r}."
    rows = _project_rows(db, viewer.org_id)
    form = {"name": name, "description": description, "priority": priority, "instructions": instructions}
    return render(
        request, "admin_projects.html", status_code=400, rows=rows, priorities=PRIORITIES, error=error, form=form
    )


def _project_context(db: Database, project: Project) -> dict:
    with db.read() as session:
        versions = list(
            session.scalars(
                select(InstructionVersion)
                .where(InstructionVersion.project_id == project.id)
                .order_by(InstructionVersion.version.desc())
            )
        )
        people = session.execute(
            select(
                User.username,
                User.display_name,
                func.count(Assignment.id),
                func.sum(case((Assignment.status == "done", 1), else_=0)),
                func.sum(case((Assignment.status == "skipped", 1), else_=0)),
            )
            .join(Assignment, Assignment.user_id == User.id)
            .join(Task, Task.id == Assignment.task_id)
            .where(Task.project_id == project.id)
            .group_by(User.id, User.username, User.display_name)
            .order_by(User.username)
        ).all()
        kinds = dict(
            session.execute(
                select(Task.kind, func.count()).where(Task.project_id == project.id).group_by(Task.kind)
            ).all()
        )
        labels = dict(
            session.execute(
                select(Label.kind, func.count())
                .where(Label.project_id == project.id, Label.skip_reason.is_(None))
                .group_by(Label.kind)
            ).all()
        )
        recent = session.execute(
            select(Label.kind, Label.payload, Label.skip_reason, Label.created_at, User.username, Task.prompt)
            .join(User, User.id == Label.user_id)
            .join(Task, Task.id == Label.task_id)
            .where(Label.project_id == project.id)
            .where(Label.skip_reason.is_not(None) | Label.kind.in_(("demonstrate", "write_prompt")))
            .order_by(Label.id.desc())
            .limit(RECENT)
        ).all()
        use_cases = clean_use_cases(
            [
                (meta or {}).get("use_case") or ""
                for meta in session.scalars(
                    select(Task.meta).where(Task.project_id == project.id, Task.kind == "write_prompt")
                )
            ]
        )
    return {
        "project": project,
        "versions": versions,
        "recent": [
            {
                "kind": kind,
                "text": reason if reason is not None else _label_text(payload),
                "skipped": reason is not None,
                "when": when,
                "username": username,
                "prompt": prompt,
            }
            for kind, payload, reason, when, username, prompt in recent
        ],
        "people": [
            {"username": u, "name": d or u, "assigned": a, "done": int(done or 0), "skipped": int(s or 0)}
            for u, d, a, done, s in people
        ],
        "kinds": kinds,
        "labels": labels,
        "priority": PRIORITIES.get(project.priority, ""),
        "exports": EXPORTS,
        "prompt_kinds": PROMPT_KINDS,
        "use_cases": use_cases,
    }


def _label_text(payload: dict | None) -> str:
    """What a demonstration or a written prompt says, for the admin to read."""
    payload = payload or {}
    return payload.get("response") or payload.get("prompt") or payload.get("instruction") or ""


@router.get("/admin/projects/{project_id}")
def project_page(request: Request, project_id: int, viewer: Viewer = Depends(require_admin)) -> Response:
    db = request.app.state.db
    project = org_project(db, viewer, project_id)
    imported = request.query_params.get("imported")
    return render(request, "admin_project.html", imported=imported, **_project_context(db, project))


@router.post("/admin/projects/{project_id}/instructions")
def new_instructions(
    request: Request, project_id: int, text: str = Form(""), viewer: Viewer = Depends(require_admin)
) -> Response:
    db = request.app.state.db
    project = org_project(db, viewer, project_id)
    with db.write() as session:
        publish_instructions(session, project.id, text, viewer.id)
    return RedirectResponse(f"/admin/projects/{project.id}", status_code=303)


@router.post("/admin/projects/{project_id}/prompt-tasks")
def new_prompt_tasks(
    request: Request,
    project_id: int,
    kind: str = Form("plain"),
    per_labeler: str = Form("1"),
    labelers: str = Form(""),
    use_cases: str = Form(""),
    viewer: Viewer = Depends(require_admin),
) -> Response:
    """Write-a-prompt work: N tasks for each labeler, of one kind or of all three in turn ("mix")."""
    db = request.app.state.db
    project = org_project(db, viewer, project_id)
    try:
        count = int(per_labeler) if per_labeler.strip().isdigit() else 0
        kinds = list(PROMPT_KINDS) if kind == "mix" else [kind]
        names = [n for n in labelers.replace(",", " ").split() if n]
        with db.write() as session:
            summary = create_prompt_tasks(
                session,
                project.id,
                per_labeler=count,
                prompt_types=kinds,
                use_cases=use_cases,
                labelers=names,
            )
    except (InputError, ValueError) as e:
        form = {"kind": kind, "per_labeler": per_labeler, "labelers": labelers, "use_cases": use_cases}
        return render(
            request,
            "admin_project.html",
            status_code=400,
            prompt_error=str(e),
            prompt_form=form,
            **_project_context(db, project),
        )
    return RedirectResponse(f"/admin/projects/{project.id}?imported={summary.tasks}", status_code=303)


@router.post("/admin/projects/{project_id}/import")
async def import_upload(request: Request, project_id: int, viewer: Viewer = Depends(require_admin)) -> Response:
    form = await request.form()
    upload = form.get("file")
    fields = {name: str(form.get(name, "")) for name in ("kind", "overlap", "per_item", "labelers", "seed")}
    if upload is None or isinstance(upload, str):
        return await run_in_threadpool(_import_failed, request, viewer, project_id, "Choose a JSONL file to import.")
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as tmp:
        size = 0
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > MAX_UPLOAD:
                return await run_in_threadpool(_import_failed, request, viewer, project_id, "The file is too large.")
            tmp.write(chunk)
        tmp.flush()
        name = Path(upload.filename or "upload.jsonl").name
        return await run_in_threadpool(_import_file, request, viewer, project_id, Path(tmp.name), name, fields)


def _import_failed(request: Request, viewer: Viewer, project_id: int, message: str) -> Response:
    db = request.app.state.db
    project = org_project(db, viewer, project_id)
    return render(request, "admin_project.html", status_code=400, import_error=message, **_project_context(db, project))


def _import_file(
    request: Request, viewer: Viewer, project_id: int, path: Path, name: str, fields: dict[str, str]
) -> Response:
    db = request.app.state.db
    project = org_project(db, viewer, project_id)
    try:
        kind = fields["kind"] if fields["kind"] in IMPORT_KINDS else "rank"
        overlap = float(fields["overlap"] or 0) / 100
        per_item = int(fields["per_item"] or 2)
        seed = int(fields["seed"] or 0)
        if not 0 <= overlap <= 1 or per_item < 1:
            raise InputError("Overlap is a percentage from 0 to 100 and labelers per item at least 1.")
        items = read_rank_items(path, name) if kind == "rank" else read_demonstration_items(path, name)
        labelers = [n for n in fields["labelers"].replace(",", " ").split() if n]
        with db.write() as session:
            summary = import_items(
                session, project.id, kind, items, labelers=labelers, overlap=overlap, per_item=per_item, seed=seed
            )
    except (RecordError, InputError, ValueError) as e:
        return _import_failed(request, viewer, project_id, str(e))
    return RedirectResponse(f"/admin/projects/{project.id}?imported={summary.tasks}", status_code=303)


@router.get("/admin/projects/{project_id}/export/{what}.jsonl")
def export(request: Request, project_id: int, what: str, viewer: Viewer = Depends(require_admin)) -> Response:
    db = request.app.state.db
    project = org_project(db, viewer, project_id)
    if what not in EXPORTS:
        raise HTTPException(404)
    filename = f"{project.name.replace(' ', '_')}-{what}.jsonl"
    safe = "".join(c for c in filename if c.isalnum() or c in "._-") or f"{what}.jsonl"
    return StreamingResponse(
        jsonl_chunks(iter_export(db, project.id, what)),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{safe}"'},
    )
