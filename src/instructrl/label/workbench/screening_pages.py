"""The screening flow's pages (the rules and the scoring are :mod:`.screening`).

Admins (``/admin/screening``): create a test from a JSONL of items (with its topics and cut-offs), read
the report of every applicant who took it (also as JSON), open one applicant's answers beside the
researchers', score their demonstrations 1-7, and make an applicant a labeler.

Applicants (``/screening``, a user with the role ``applicant``): take each test of their organization
once: flag, rank, write, declare the topics they can judge, submit.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from instructrl.label.workbench.schema import letter
from instructrl.label.workbench.screening import (
    DEFAULT_TOPICS,
    Cutoffs,
    Graded,
    ItemView,
    ScreeningReport,
    check_score,
    grade,
    parse_answers,
    parse_topics,
    read_items,
)
from instructrl.records import RecordError
from instructrl.web.auth import Viewer, current_viewer, require_admin
from instructrl.web.db import Database, InputError, utcnow
from instructrl.web.models import ScreeningAnswer, ScreeningAttempt, ScreeningItem, ScreeningTest, User
from instructrl.web.pages import render

router = APIRouter()

MAX_UPLOAD = 16 * 1024 * 1024  # bytes of a screening test's JSONL


def require_applicant(viewer: Viewer = Depends(current_viewer)) -> Viewer:
    if viewer.role != "applicant":
        raise HTTPException(403, "Screening tests are for applicants.")
    return viewer


def _test_in_org(db: Database, org_id: int, test_id: int) -> ScreeningTest:
    with db.read() as session:
        test = session.get(ScreeningTest, test_id)
    if test is None or test.org_id != org_id:
        raise HTTPException(404)
    return test


def _items(db: Database, test_id: int) -> list[ScreeningItem]:
    with db.read() as session:
        return list(
            session.scalars(
                select(ScreeningItem).where(ScreeningItem.test_id == test_id).order_by(ScreeningItem.position)
            )
        )


def _cutoffs(test: ScreeningTest) -> Cutoffs:
    return Cutoffs(flag=test.flag_cutoff, rank=test.rank_cutoff, demo=test.demo_cutoff)


def attempt_report(db: Database, test: ScreeningTest, attempt: ScreeningAttempt) -> ScreeningReport:
    with db.read() as session:
        rows = session.execute(
            select(ScreeningItem, ScreeningAnswer)
            .outerjoin(
                ScreeningAnswer,
                (ScreeningAnswer.item_id == ScreeningItem.id) & (ScreeningAnswer.attempt_id == attempt.id),
            )
            .where(ScreeningItem.test_id == test.id)
            .order_by(ScreeningItem.position)
        ).all()
    graded = [
        Graded(item.kind, item.reference, answer.answer if answer else None, answer.score if answer else None)
        for item, answer in rows
    ]
    return grade(graded, attempt.topics or [], _cutoffs(test))


def applicant_rows(db: Database, test: ScreeningTest) -> list[dict[str, Any]]:
    """One row per applicant who started the test: who, status and (once submitted) the report."""
    with db.read() as session:
        rows = session.execute(
            select(ScreeningAttempt, User.username, User.display_name, User.role)
            .join(User, User.id == ScreeningAttempt.user_id)
            .where(ScreeningAttempt.test_id == test.id)
            .order_by(ScreeningAttempt.id)
        ).all()
    return [
        {
            "attempt_id": attempt.id,
            "username": username,
            "name": name or username,
            "role": role,
            "status": attempt.status,
            "submitted_at": attempt.submitted_at,
            "report": attempt_report(db, test, attempt) if attempt.status == "submitted" else None,
        }
        for attempt, username, name, role in rows
    ]


# ------------------------------------------------------------------------------------ admin


def _tests(db: Database, org_id: int) -> list[ScreeningTest]:
    with db.read() as session:
        return list(
            session.scalars(select(ScreeningTest).where(ScreeningTest.org_id == org_id).order_by(ScreeningTest.id))
        )


def _admin_list(request: Request, viewer: Viewer, status_code: int = 200, **context: Any) -> Response:
    context.setdefault("form", {})
    return render(
        request,
        "screening_admin.html",
        status_code=status_code,
        tests=_tests(request.app.state.db, viewer.org_id),
        default_topics="\n".join(DEFAULT_TOPICS),
        defaults=Cutoffs(),
        **context,
    )


@router.get("/admin/screening")
def screening_admin(request: Request, viewer: Viewer = Depends(require_admin)) -> Response:
    return _admin_list(request, viewer)


def _percent(raw: str, what: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"{what} is a percentage from 0 to 100.") from None
    if not 0 <= value <= 100:
        raise InputError(f"{what} is a percentage from 0 to 100.")
    return value / 100


@router.post("/admin/screening")
async def create_test(request: Request, viewer: Viewer = Depends(require_admin)) -> Response:
    form = await request.form()
    fields = {n: str(form.get(n, "")) for n in ("name", "topics", "flag_cutoff", "rank_cutoff", "demo_cutoff")}
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        return _admin_list(request, viewer, 400, error="Choose the test's JSONL file.", form=fields)
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as tmp:
        size = 0
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > MAX_UPLOAD:
                return _admin_list(request, viewer, 400, error="The file is too large.", form=fields)
            tmp.write(chunk)
        tmp.flush()
        name = Path(upload.filename or "screening.jsonl").name
        return await run_in_threadpool(_create_test, request, viewer, Path(tmp.name), name, fields)


def _create_test(request: Request, viewer: Viewer, path: Path, filename: str, fields: dict[str, str]) -> Response:
    db = request.app.state.db
    try:
        name = fields["name"].strip()
        if not name or len(name) > 200:
            raise InputError("A test needs a name of at most 200 characters.")
        flag_cutoff = _percent(fields["flag_cutoff"], "The flagging cut-off")
        rank_cutoff = _percent(fields["rank_cutoff"], "The ranking cut-off")
        demo_cutoff = float(fields["demo_cutoff"]) if fields["demo_cutoff"].strip() else -1.0
        if not 1 <= demo_cutoff <= 7:
            raise InputError("The demonstration cut-off is a score from 1 to 7.")
        items = read_items(path, filename)
        with db.write() as session:
            if session.scalar(
                select(ScreeningTest.id).where(ScreeningTest.org_id == viewer.org_id, ScreeningTest.name == name)
            ):
                raise InputError(f"There is already a screening test called {name!r}.")
            test = ScreeningTest(
                org_id=viewer.org_id,
                name=name,
                topics=parse_topics(fields["topics"]),
                flag_cutoff=flag_cutoff,
                rank_cutoff=rank_cutoff,
                demo_cutoff=demo_cutoff,
            )
            session.add(test)
            session.flush()
            session.add_all(
                ScreeningItem(
                    test_id=test.id,
                    position=position,
                    kind=item.kind,
                    prompt=item.prompt,
                    responses=item.responses,
                    reference=item.reference,
                )
                for position, item in enumerate(items)
            )
            test_id = test.id
    except (InputError, RecordError, ValueError) as e:
        return _admin_list(request, viewer, 400, error=str(e), form=fields)
    return RedirectResponse(f"/admin/screening/{test_id}", status_code=303)


@router.get("/admin/screening/{test_id}")
def screening_test_page(request: Request, test_id: int, viewer: Viewer = Depends(require_admin)) -> Response:
    db = request.app.state.db
    test = _test_in_org(db, viewer.org_id, test_id)
    items = _items(db, test.id)
    kinds = {kind: sum(item.kind == kind for item in items) for kind in ("flag", "rank", "demonstrate")}
    return render(request, "screening_test.html", test=test, rows=applicant_rows(db, test), kinds=kinds)


@router.get("/admin/screening/{test_id}/report.json")
def screening_report_json(request: Request, test_id: int, viewer: Viewer = Depends(require_admin)) -> Response:
    db = request.app.state.db
    test = _test_in_org(db, viewer.org_id, test_id)
    rows = [
        {
            "username": row["username"],
            "status": row["status"],
            "report": row["report"].to_dict() if row["report"] else None,
        }
        for row in applicant_rows(db, test)
    ]
    return JSONResponse({"test": test.name, "applicants": rows}, headers={"Cache-Control": "no-store"})


def _attempt_in_test(db: Database, test: ScreeningTest, attempt_id: int) -> tuple[ScreeningAttempt, User]:
    with db.read() as session:
        row = session.execute(
            select(ScreeningAttempt, User)
            .join(User, User.id == ScreeningAttempt.user_id)
            .where(ScreeningAttempt.id == attempt_id)
        ).first()
    if row is None or row[0].test_id != test.id:
        raise HTTPException(404)
    return row[0], row[1]


def _attempt_page(
    request: Request, test: ScreeningTest, attempt: ScreeningAttempt, user: User, error: str | None = None, status=200
) -> Response:
    db = request.app.state.db
    with db.read() as session:
        answers = {
            a.item_id: a
            for a in session.scalars(select(ScreeningAnswer).where(ScreeningAnswer.attempt_id == attempt.id))
        }
    items = [
        {"item": item, "answer": answers.get(item.id), "letters": [letter(i) for i in range(len(item.responses or []))]}
        for item in _items(db, test.id)
    ]
    report = attempt_report(db, test, attempt) if attempt.status == "submitted" else None
    return render(
        request,
        "screening_attempt.html",
        status_code=status,
        test=test,
        attempt=attempt,
        applicant=user,
        items=items,
        report=report,
        error=error,
    )


@router.get("/admin/screening/{test_id}/attempts/{attempt_id}")
def attempt_page(request: Request, test_id: int, attempt_id: int, viewer: Viewer = Depends(require_admin)):
    db = request.app.state.db
    test = _test_in_org(db, viewer.org_id, test_id)
    attempt, user = _attempt_in_test(db, test, attempt_id)
    return _attempt_page(request, test, attempt, user)


@router.post("/admin/screening/{test_id}/attempts/{attempt_id}/scores")
async def score_post(request: Request, test_id: int, attempt_id: int, viewer: Viewer = Depends(require_admin)):
    form = await request.form()
    fields = {name: str(form.get(name, "")) for name in form.keys()}
    return await run_in_threadpool(_score, request, viewer, test_id, attempt_id, fields)


def _score(request: Request, viewer: Viewer, test_id: int, attempt_id: int, fields: dict[str, str]) -> Response:
    db = request.app.state.db
    test = _test_in_org(db, viewer.org_id, test_id)
    attempt, user = _attempt_in_test(db, test, attempt_id)
    with db.read() as session:
        demonstrations = session.scalars(
            select(ScreeningAnswer.id)
            .join(ScreeningItem, ScreeningItem.id == ScreeningAnswer.item_id)
            .where(ScreeningAnswer.attempt_id == attempt.id, ScreeningItem.kind == "demonstrate")
        ).all()
    scores = {}
    for answer_id in demonstrations:  # every score is checked before any is stored
        raw = fields.get(f"score_{answer_id}", "")
        if raw.strip():
            scores[answer_id] = check_score(raw)
            if scores[answer_id] is None:
                return _attempt_page(request, test, attempt, user, "A score is a whole number from 1 to 7.", 400)
    now = utcnow()
    with db.write() as session:
        for answer_id, score in scores.items():
            answer = session.get(ScreeningAnswer, answer_id)
            answer.score, answer.reviewer_id, answer.reviewed_at = score, viewer.id, now
    return RedirectResponse(f"/admin/screening/{test.id}/attempts/{attempt.id}", status_code=303)


@router.post("/admin/screening/{test_id}/attempts/{attempt_id}/promote")
def promote(request: Request, test_id: int, attempt_id: int, viewer: Viewer = Depends(require_admin)) -> Response:
    db = request.app.state.db
    test = _test_in_org(db, viewer.org_id, test_id)
    attempt, _ = _attempt_in_test(db, test, attempt_id)
    with db.write() as session:
        user = session.get(User, attempt.user_id)
        if user.org_id != viewer.org_id:
            raise HTTPException(404)
        if user.role == "applicant":
            user.role = "labeler"
    return RedirectResponse(f"/admin/screening/{test.id}/attempts/{attempt.id}", status_code=303)


# ------------------------------------------------------------------------------------ applicants


@router.get("/screening")
def my_tests(request: Request, viewer: Viewer = Depends(require_applicant)) -> Response:
    db = request.app.state.db
    with db.read() as session:
        done = dict(
            session.execute(
                select(ScreeningAttempt.test_id, ScreeningAttempt.status).where(ScreeningAttempt.user_id == viewer.id)
            ).all()
        )
    tests = [{"test": t, "status": done.get(t.id, "new")} for t in _tests(db, viewer.org_id)]
    return render(request, "screening_list.html", tests=tests, submitted=request.query_params.get("submitted") == "1")


def _start(db: Database, viewer: Viewer, test: ScreeningTest) -> ScreeningAttempt:
    """The viewer's attempt at ``test``, started now if there is none (two tabs at once: one attempt)."""
    statement = select(ScreeningAttempt).where(
        ScreeningAttempt.test_id == test.id, ScreeningAttempt.user_id == viewer.id
    )
    with db.read() as session:
        attempt = session.scalar(statement)
    if attempt is not None:
        return attempt
    try:
        with db.write() as session:
            attempt = ScreeningAttempt(test_id=test.id, user_id=viewer.id, status="open", started_at=utcnow())
            session.add(attempt)
        return attempt
    except IntegrityError:
        with db.read() as session:
            return session.scalar(statement)


def _take_page(
    request: Request, test: ScreeningTest, fields: dict[str, list[str]], errors=(), status_code: int = 200
) -> Response:
    items = [
        {"item": item, "letters": [letter(i) for i in range(len(item.responses or []))]}
        for item in _items(request.app.state.db, test.id)
    ]
    return render(
        request, "screening_take.html", status_code=status_code, test=test, items=items, fields=fields, errors=errors
    )


@router.get("/screening/{test_id}")
def take(request: Request, test_id: int, viewer: Viewer = Depends(require_applicant)) -> Response:
    db = request.app.state.db
    test = _test_in_org(db, viewer.org_id, test_id)
    attempt = _start(db, viewer, test)
    if attempt.status != "open":
        return RedirectResponse("/screening?submitted=1", status_code=303)
    return _take_page(request, test, {})


@router.post("/screening/{test_id}/submit")
async def submit(request: Request, test_id: int, viewer: Viewer = Depends(require_applicant)) -> Response:
    form = await request.form()
    fields = {name: [v for v in form.getlist(name) if isinstance(v, str)] for name in form.keys()}
    return await run_in_threadpool(_submit, request, viewer, test_id, fields)


def _submit(request: Request, viewer: Viewer, test_id: int, fields: dict[str, list[str]]) -> Response:
    db = request.app.state.db
    test = _test_in_org(db, viewer.org_id, test_id)
    items = _items(db, test.id)
    views = [ItemView(item.id, item.kind, len(item.responses or [])) for item in items]
    answers, topics, errors = parse_answers(fields, views, test.topics)
    if errors:
        return _take_page(request, test, fields, errors, status_code=400)
    attempt = _start(db, viewer, test)
    with db.write() as session:
        locked = session.get(ScreeningAttempt, attempt.id, with_for_update=True)
        if locked.status == "open":  # a second submit (a retry) changes nothing
            session.add_all(ScreeningAnswer(attempt_id=locked.id, item_id=i, answer=a) for i, a in answers.items())
            locked.topics, locked.status, locked.submitted_at = topics, "submitted", utcnow()
    return RedirectResponse("/screening?submitted=1", status_code=303)
