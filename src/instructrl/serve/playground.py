"""The playground: signed-in users chat with a served model, compare two models side by side, and say what
may be done with what they type.

* ``/playground/chat``: chat with a chosen model (system prompt, temperature, top-p, length). On switching to
  a model the page shows the notice that what is submitted may be used to train future models; the
  server records that the user saw it (``Consent``, per model and notice version) and refuses to send a
  prompt before. Every prompt is stored with user, organization, model, time and consent state.
* ``/playground/compare``: one prompt, two served models drawn by the server, on sides drawn at random and
  named only after the vote; the vote (left, right, tie, both bad) is a ``Comparison`` row.
* ``/playground/data``: the user's notices and stored prompts; opting out (the user, or an admin for the
  whole organization) keeps every prompt, past and future, out of training exports.

The chat and compare calls are JSON requests from the page's script, carrying the session's CSRF token in
a header; the answers stream as server-sent events through the same engine as the API.
"""

from __future__ import annotations

import json
import random
from typing import Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from instructrl.serve.api import APIError, Call, Run, check_call, json_body
from instructrl.serve.engine import EngineError
from instructrl.web.auth import Viewer, current_viewer
from instructrl.web.db import utcnow
from instructrl.web.keys import Caller
from instructrl.web.models import Comparison, Consent, Organization, ServedPrompt, User
from instructrl.web.pages import render
from instructrl.web.prompts import accept_notice, has_consent, record

router = APIRouter()

VOTES = ("left", "right", "tie", "both_bad")
COMPARE = "compare"  # the notice of the compare page covers whichever models it draws
RECENT = 50  # prompts listed on the data page


def _serving(request: Request) -> Any:
    return request.app.state.serving


def _state(request: Request, viewer: Viewer) -> dict:
    """The viewer's notices seen (at the current version) and opt-outs."""
    version = _serving(request).config.notice_version
    with request.app.state.db.read() as session:
        seen = set(
            session.scalars(select(Consent.model).where(Consent.user_id == viewer.id, Consent.version == version))
        )
        user_out, org_out = session.execute(
            select(User.training_opt_out, Organization.training_opt_out)
            .join(Organization, Organization.id == User.org_id)
            .where(User.id == viewer.id)
        ).one()
    return {"seen": seen, "user_opt_out": bool(user_out), "org_opt_out": bool(org_out)}


@router.get("/playground")
def playground_home(viewer: Viewer = Depends(current_viewer)) -> Response:
    return RedirectResponse("/playground/chat", status_code=303)


@router.get("/playground/chat")
def chat_page(request: Request, viewer: Viewer = Depends(current_viewer)) -> Response:
    serving = _serving(request)
    state = _state(request, viewer)
    return render(
        request,
        "playground.html",
        models=list(serving.models),
        seen=sorted(state["seen"]),
        opted_out=state["user_opt_out"] or state["org_opt_out"],
        notice_version=serving.config.notice_version,
        default_max_tokens=min(serving.config.default_max_tokens, 256),
    )


@router.post("/playground/notice")
def notice(request: Request, model: str = Form(...), viewer: Viewer = Depends(current_viewer)) -> Response:
    """The user saw the notice for ``model`` (the form posts it; the page's script posts it too)."""
    serving = _serving(request)
    if model not in serving.models and model != COMPARE:
        raise HTTPException(404, "There is no such model.")
    with request.app.state.db.write() as session:
        accept_notice(session, viewer.id, model, serving.config.notice_version)
    return JSONResponse({"ok": True, "model": model, "version": serving.config.notice_version})


def _notice_seen(request: Request, viewer: Viewer, model: str) -> bool:
    version = _serving(request).config.notice_version
    with request.app.state.db.read() as session:
        return (
            session.scalar(
                select(Consent.id).where(
                    Consent.user_id == viewer.id, Consent.model == model, Consent.version == version
                )
            )
            is not None
        )


def _require_notice(request: Request, viewer: Viewer, model: str) -> None:
    if not _notice_seen(request, viewer, model):
        raise APIError(
            409,
            "Read the notice on how prompts may be used before sending one.",
            code="notice_required",
            param="model",
        )


def _caller(viewer: Viewer) -> Caller:
    return Caller(None, viewer.id, viewer.org_id)


@router.post("/playground/chat")
async def chat(request: Request, viewer: Viewer = Depends(current_viewer)) -> Response:
    """One chat turn: ``{model, messages, temperature, top_p, max_tokens}``; the answer streams back as
    server-sent events ``{"delta": text}``, then ``{"done": finish_reason, "prompt_id": id}``."""
    try:
        body = await json_body(request)
        body.update(stream=True, n=1)
        call = check_call(request, body, chat=True)
        await run_in_threadpool(_require_notice, request, viewer, call.model.name)
        run = Run(call)
    except APIError as e:
        return e.response()
    except EngineError as e:
        return APIError(503, str(e), type="server_error").response()
    return StreamingResponse(_chat_events(request, viewer, run), media_type="text/event-stream")


async def _chat_events(request: Request, viewer: Viewer, run: Run):
    text, finish = "", None
    try:
        async for _, kind, value in run.events_until_done():
            if kind == "delta":
                text += value
                yield f"data: {json.dumps({'delta': value}, ensure_ascii=False)}\n\n"
            else:
                finish = value
    except EngineError as e:
        yield f"data: {json.dumps({'error': str(e)})}\n\n"
        return
    finally:
        run.cancel()
    prompt_id = await run_in_threadpool(_store, request, viewer, run.call, [text], "playground", run.call.model.name)
    yield f"data: {json.dumps({'done': finish, 'prompt_id': prompt_id})}\n\n"


def _store(request: Request, viewer: Viewer, call: Call, texts: list[str], source: str, model: str) -> int:
    serving = _serving(request)
    p = call.params[0]
    with request.app.state.db.write() as session:
        row = record(
            session,
            org_id=viewer.org_id,
            user_id=viewer.id,
            source=source,
            model=model,
            prompt=call.prompt,
            params={"temperature": p.temperature, "top_p": p.top_p, "max_tokens": p.max_tokens},
            response=texts,
            notice_version=serving.config.notice_version,
        )
        return row.id


# --------------------------------------------------------------------------- side by side


@router.get("/playground/compare")
def compare_page(request: Request, viewer: Viewer = Depends(current_viewer)) -> Response:
    serving = _serving(request)
    state = _state(request, viewer)
    return render(
        request,
        "compare.html",
        enough=len(serving.models) >= 2,
        seen=COMPARE in state["seen"],
        opted_out=state["user_opt_out"] or state["org_opt_out"],
        notice_version=serving.config.notice_version,
    )


@router.post("/playground/compare")
async def compare(request: Request, viewer: Viewer = Depends(current_viewer)) -> Response:
    """``{prompt, temperature, max_tokens}`` -> both answers, sides drawn at random, models not named."""
    serving = _serving(request)
    try:
        if len(serving.models) < 2:
            raise APIError(400, "Comparing needs two served models (serve models=[a=DIR,b=DIR]).")
        body = await json_body(request)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise APIError(400, "Write a prompt first.", param="prompt")
        await run_in_threadpool(_require_notice, request, viewer, COMPARE)
        pair = random.sample(list(serving.models), 2)  # which two, and which goes left
        calls = []
        for name in pair:
            fields = {k: body[k] for k in ("temperature", "top_p", "max_tokens") if k in body}
            calls.append(
                check_call(request, {**fields, "model": name, "messages": [{"role": "user", "content": prompt}]}, True)
            )
        runs = [Run(c) for c in calls]
    except APIError as e:
        return e.response()
    except EngineError as e:
        return APIError(503, str(e), type="server_error").response()
    texts = ["", ""]
    try:
        for side, run in enumerate(runs):
            async for _, kind, value in run.events_until_done():
                if kind == "delta":
                    texts[side] += value
    except EngineError as e:
        return APIError(500, f"The server failed to generate: {e}", type="server_error").response()
    finally:
        for run in runs:
            run.cancel()

    def store() -> int:
        with request.app.state.db.write() as session:
            row = record(
                session,
                org_id=viewer.org_id,
                user_id=viewer.id,
                source="compare",
                model=COMPARE,
                prompt=calls[0].prompt,
                params={"models": pair},
                response=texts,
                notice_version=serving.config.notice_version,
            )
            comparison = Comparison(
                org_id=viewer.org_id, user_id=viewer.id, prompt_id=row.id, models=pair, responses=texts
            )
            session.add(comparison)
            session.flush()
            return comparison.id

    comparison_id = await run_in_threadpool(store)
    return JSONResponse({"id": comparison_id, "left": texts[0], "right": texts[1]})


@router.post("/playground/compare/{comparison_id}/vote")
async def vote(request: Request, comparison_id: int, viewer: Viewer = Depends(current_viewer)) -> Response:
    """``{vote: left|right|tie|both_bad}`` -> the models' names, now that they may be shown."""
    try:
        body = await json_body(request)
        choice = body.get("vote")
        if choice not in VOTES:
            raise APIError(400, f"'vote' must be one of {', '.join(VOTES)}.", param="vote")
    except APIError as e:
        return e.response()

    def save() -> list[str] | None:
        with request.app.state.db.write() as session:
            row = session.get(Comparison, comparison_id)
            if row is None or row.user_id != viewer.id:
                return None
            if row.vote is None:  # the first vote counts; a second click changes nothing
                row.vote, row.voted_at = choice, utcnow()
            return list(row.models)

    models = await run_in_threadpool(save)
    if models is None:
        return APIError(404, "There is no such comparison.", code="not_found").response()
    return JSONResponse({"left": models[0], "right": models[1]})


# --------------------------------------------------------------------------- data use


@router.get("/playground/data")
def data_page(request: Request, viewer: Viewer = Depends(current_viewer), saved: int = 0) -> Response:
    state = _state(request, viewer)
    with request.app.state.db.read() as session:
        prompts = list(
            session.scalars(
                select(ServedPrompt)
                .where(ServedPrompt.user_id == viewer.id)
                .order_by(ServedPrompt.id.desc())
                .limit(RECENT)
            )
        )
        usable = {
            p.id for p in prompts if p.consent and has_consent(session, viewer.id, p.model, p.notice_version or 0)
        }
    return render(
        request,
        "data_use.html",
        state=state,
        prompts=prompts,
        usable=usable,
        saved=bool(saved),
        notice_version=_serving(request).config.notice_version,
    )


@router.post("/playground/data")
def data_save(
    request: Request,
    opt_out: str = Form(""),
    org_opt_out: str = Form(""),
    viewer: Viewer = Depends(current_viewer),
) -> Response:
    with request.app.state.db.write() as session:
        session.get(User, viewer.id).training_opt_out = opt_out == "on"
        if viewer.is_admin:
            session.get(Organization, viewer.org_id).training_opt_out = org_opt_out == "on"
    return RedirectResponse("/playground/data?saved=1", status_code=303)
