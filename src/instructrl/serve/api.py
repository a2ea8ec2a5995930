"""The OpenAI-compatible API: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` (each with
server-sent events when ``stream`` is true), and ``/v1/prompts``, the caller's organization's stored
prompts. Errors come in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with a 4xx
status for anything the request got wrong; a traceback never reaches a client.

The request body is parsed here, field by field, rather than by a schema library, so that every
mistake gets OpenAI's message shape and names its field. API requests are not CSRF-checked (the app
exempts ``/v1/``): they authenticate with a key in a header, which a cross-site form cannot send, and
they must be ``application/json``, which a cross-site form cannot send either without the browser
asking first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from instructrl.serve.engine import EngineError, SamplingParams, Sequence
from instructrl.web.keys import ANONYMOUS, Caller, find_caller
from instructrl.web.models import ServedPrompt, User
from instructrl.web.prompts import record

log = logging.getLogger(__name__)

MAX_BODY = 4 * 1024 * 1024  # bytes of a request body
MAX_STOP = 4  # stop strings per request, as OpenAI allows
ROLES = ("system", "user", "assistant")

router = APIRouter()


class APIError(Exception):
    """A request the API refuses: OpenAI's error shape with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


# --------------------------------------------------------------------------- auth and input


async def caller_of(request: Request) -> Caller:
    """The request's key holder; 401 for a missing, unknown or revoked key; 429 past the key's rate."""
    state = request.app.state
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip() if scheme.lower() == "bearer" else ""
    found = await run_in_threadpool(find_caller, state.db, key) if key else None
    if found is not None:
        caller = found
    elif state.serving.keyless():  # no key exists and only this machine can connect: any key or none will do
        caller = ANONYMOUS
    elif header and not key:
        raise APIError(401, "Send the API key as 'Authorization: Bearer KEY'.", type="authentication_error")
    elif key:
        raise APIError(401, "Incorrect API key provided.", type="authentication_error", code="invalid_api_key")
    else:
        raise APIError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' "
            "(keys are made with `instructrl serve key create user=NAME`).",
            type="authentication_error",
            code="missing_api_key",
        )
    who = caller.key_id if caller.key_id is not None else f"ip:{request.client.host if request.client else '?'}"
    wait = state.serving.limiter.allow(who)
    if wait:
        raise APIError(
            429,
            f"Rate limit reached for this key: {state.serving.limiter.per_minute} requests per minute. "
            f"Try again in {math.ceil(wait)} s.",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"retry-after": str(math.ceil(wait))},
        )
    return caller


async def json_body(request: Request) -> dict:
    if not request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
        raise APIError(415, "Send the request body as JSON with 'Content-Type: application/json'.")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise APIError(413, f"The request body is larger than {MAX_BODY // (1024 * 1024)} MiB.")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise APIError(413, f"The request body is larger than {MAX_BODY // (1024 * 1024)} MiB.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise APIError(400, f"The request body is not valid UTF-8 (byte {e.start}).") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as e:
        raise APIError(
            400, f"We could not parse the JSON body of your request: {e.msg} (line {e.lineno}, column {e.colno})."
        ) from None
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.")
    return body


def _number(body: dict, name: str, default: float, low: float, high: float, *, low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise APIError(400, f"'{name}' must be a number.", param=name, code="invalid_type")
    if value < low or (low_open and value == low) or value > high:
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise APIError(400, f"'{name}' must be in {bound}, got {value}.", param=name, code="invalid_value")
    return float(value)


def _integer(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise APIError(400, f"'{name}' must be an integer.", param=name, code="invalid_type")
    return value


def _stop(body: dict) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise APIError(400, "'stop' must be a non-empty string or a list of them.", param="stop")
    if len(stops) > MAX_STOP:
        raise APIError(400, f"'stop' takes at most {MAX_STOP} strings.", param="stop")
    return tuple(stops)


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list of {role, content} objects.", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise APIError(400, f"messages[{i}]: 'role' must be one of {', '.join(ROLES)}.", param=f"messages[{i}]")
        content = m.get("content")
        if isinstance(content, list):  # content parts: only text ones
            if not all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
            ):
                raise APIError(400, f"messages[{i}]: only text content is supported.", param=f"messages[{i}].content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise APIError(400, f"messages[{i}]: 'content' must be a string.", param=f"messages[{i}].content")
        out.append({"role": m["role"], "content": content})
    if out[-1]["role"] == "assistant":
        raise APIError(400, "The last message must be from the user (or the system).", param="messages")
    return out


def _prompts(body: dict) -> list[str]:
    value = body.get("prompt")
    prompts = [value] if isinstance(value, str) else value
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise APIError(400, "'prompt' must be a string or a non-empty list of strings.", param="prompt")
    return prompts


@dataclass
class Call:
    """One checked request: its model, prompts (token ids), sampling settings and options."""

    model: Any  # a ServedModel
    prompt: Any  # what is stored: the text, the list of texts, or the messages
    ids: list[list[int]]
    params: list[SamplingParams]  # one per sequence: prompt-major, n per prompt
    n: int
    stream: bool
    include_usage: bool


def check_call(request: Request, body: dict, chat: bool) -> Call:
    serving = request.app.state.serving
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise APIError(400, "'model' is required.", param="model")
    model = serving.models.get(name)
    if model is None:
        raise APIError(
            404,
            f"The model '{name}' does not exist. Served here: {', '.join(serving.models)}.",
            param="model",
            code="model_not_found",
        )
    if chat:
        messages = _messages(body)
        prompts: Any = messages
        ids = [model.encode_chat(messages)]
        max_tokens = _integer(body, "max_completion_tokens")
        max_tokens = _integer(body, "max_tokens") if max_tokens is None else max_tokens
    else:
        texts = _prompts(body)
        prompts = texts[0] if len(texts) == 1 else texts
        ids = [model.encode_text(t) for t in texts]
        max_tokens = _integer(body, "max_tokens")
    n = _integer(body, "n")
    n = 1 if n is None else n
    if not 1 <= n <= serving.config.max_n:
        raise APIError(400, f"'n' must be in [1, {serving.config.max_n}], got {n}.", param="n", code="invalid_value")
    if max_tokens is not None and max_tokens < 1:
        raise APIError(400, f"'max_tokens' must be at least 1, got {max_tokens}.", param="max_tokens")
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True)
    stop = _stop(body)
    seed = _integer(body, "seed")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise APIError(400, "'ignore_eos' must be true or false.", param="ignore_eos")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise APIError(400, "'stream' must be true or false.", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise APIError(400, "'stream_options' must be an object.", param="stream_options")
    params = []
    for i, prompt_ids in enumerate(ids):
        room = model.max_context - len(prompt_ids)
        wanted = max_tokens if max_tokens is not None else min(serving.config.default_max_tokens, room)
        if not prompt_ids:
            raise APIError(400, "The prompt is empty.", param="prompt")
        if wanted > room or room < 1:
            raise APIError(
                400,
                f"This model's maximum context length is {model.max_context} tokens. However, you requested "
                f"{len(prompt_ids) + max(wanted, 1)} tokens ({len(prompt_ids)} in the prompt, {max(wanted, 1)} for the "
                "completion). Please reduce the prompt or the completion length.",
                param="messages" if chat else "prompt",
                code="context_length_exceeded",
            )
        for j in range(n):
            s = None if seed is None else seed + 1_000_003 * i + j  # n samples of one seed differ, reproducibly
            params.append(SamplingParams(wanted, temperature, top_p, stop, s, ignore_eos))
    return Call(model, prompts, ids, params, n, stream, bool(options.get("include_usage")))


# --------------------------------------------------------------------------- running a call


class Run:
    """The sequences of one call, with an asyncio queue that the engine thread feeds."""

    def __init__(self, call: Call):
        self.call = call
        loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        engine = call.model.engine
        self.seqs: list[Sequence] = []
        for k, params in enumerate(call.params):
            prompt_ids = call.ids[k // call.n]

            def listener(event, k=k):
                loop.call_soon_threadsafe(self.events.put_nowait, (k, event))

            self.seqs.append(engine.sequence(prompt_ids, params, listener))
        self.open = len(self.seqs)
        for seq in self.seqs:
            engine.submit(seq)

    async def events_until_done(self) -> AsyncIterator[tuple[int, str, Any]]:
        while self.open:
            k, (kind, value) = await self.events.get()
            if kind in ("done", "error"):
                self.open -= 1
            if kind == "error":
                self.cancel()
                raise EngineError(value)
            yield k, kind, value

    def cancel(self) -> None:
        for seq in self.seqs:
            seq.cancel()

    def usage(self) -> dict:
        prompt = sum(len(ids) for ids in self.call.ids)
        completion = sum(len(s.tokens) for s in self.seqs)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _store(request: Request, caller: Caller, call: Call, texts: list[str], source: str = "api") -> int | None:
    serving = request.app.state.serving
    if caller.anonymous or not serving.config.store_prompts:
        return None
    p = call.params[0]
    params = {"temperature": p.temperature, "top_p": p.top_p, "max_tokens": p.max_tokens, "n": call.n}
    if p.stop:
        params["stop"] = list(p.stop)
    with request.app.state.db.write() as session:
        row = record(
            session,
            org_id=caller.org_id,
            user_id=caller.user_id,
            api_key_id=caller.key_id,
            source=source,
            model=call.model.name,
            prompt=call.prompt,
            params=params,
            response=texts,
            notice_version=serving.config.notice_version,
        )
        return row.id


def _choice(chat: bool, index: int, text: str | None, finish: str | None, *, first: bool = False) -> dict:
    if not chat:
        return {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
    delta: dict = {}
    if first:
        delta["role"] = "assistant"
    if text is not None:
        delta["content"] = text
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


async def _complete(request: Request, chat: bool) -> Response:
    try:
        caller = await caller_of(request)
        call = check_call(request, await json_body(request), chat)
        run = Run(call)
    except APIError as e:
        return e.response()
    except EngineError as e:
        return APIError(503, str(e), type="server_error").response()
    ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
    created = int(time.time())
    obj = "chat.completion" if chat else "text_completion"
    if call.stream:
        return StreamingResponse(
            _stream(request, caller, run, ident, created, chat),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
    texts = [""] * len(run.seqs)
    try:
        async for k, kind, value in run.events_until_done():
            if kind == "delta":
                texts[k] += value
    except EngineError as e:
        return APIError(500, f"The server failed to generate: {e}", type="server_error").response()
    finally:
        run.cancel()  # a client that went away frees its slots
    await run_in_threadpool(_store, request, caller, call, texts)
    choices = []
    for k, seq in enumerate(run.seqs):
        if chat:
            message = {"role": "assistant", "content": texts[k]}
            choices.append({"index": k, "message": message, "logprobs": None, "finish_reason": seq.finish_reason})
        else:
            choices.append(_choice(False, k, texts[k], seq.finish_reason))
    body = {
        "id": ident,
        "object": obj,
        "created": created,
        "model": call.model.name,
        "choices": choices,
        "usage": run.usage(),
        "system_fingerprint": None,
    }
    return JSONResponse(body)


async def _stream(request: Request, caller: Caller, run: Run, ident: str, created: int, chat: bool):
    call = run.call
    obj = "chat.completion.chunk" if chat else "text_completion"

    def event(choices: list[dict], usage: dict | None = None) -> str:
        chunk = {"id": ident, "object": obj, "created": created, "model": call.model.name, "choices": choices}
        if call.include_usage:
            chunk["usage"] = usage
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    texts = [""] * len(run.seqs)
    try:
        if chat:
            yield event([_choice(True, k, "", None, first=True) for k in range(len(run.seqs))])
        async for k, kind, value in run.events_until_done():
            if kind == "delta":
                texts[k] += value
                yield event([_choice(chat, k, value, None)])
            else:
                yield event([_choice(chat, k, None if chat else "", value)])
        if call.include_usage:
            yield event([], run.usage())
        yield "data: [DONE]\n\n"
    except EngineError as e:
        error = APIError(500, f"The server failed to generate: {e}", type="server_error").body()
        yield f"data: {json.dumps(error)}\n\n"
        return
    finally:
        run.cancel()  # the client left (the response was cancelled) or the stream ended: free the slots
    await run_in_threadpool(_store, request, caller, call, texts)


# --------------------------------------------------------------------------- routes


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await _complete(request, chat=False)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _complete(request, chat=True)


def _model_card(model: Any) -> dict:
    return {"id": model.name, "object": "model", "created": model.created, "owned_by": "instructrl"}


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    try:
        await caller_of(request)
    except APIError as e:
        return e.response()
    models = request.app.state.serving.models.values()
    return JSONResponse({"object": "list", "data": [_model_card(m) for m in models]})


@router.get("/v1/models/{name:path}")
async def get_model(request: Request, name: str) -> Response:
    try:
        await caller_of(request)
        model = request.app.state.serving.models.get(name)
        if model is None:
            raise APIError(404, f"The model '{name}' does not exist.", param="model", code="model_not_found")
    except APIError as e:
        return e.response()
    return JSONResponse(_model_card(model))


def _prompt_card(row: ServedPrompt, username: str) -> dict:
    return {
        "id": row.id,
        "object": "prompt",
        "created": int(row.created_at.timestamp()),
        "user": username,
        "model": row.model,
        "source": row.source,
        "prompt": row.prompt,
        "response": row.response,
        "params": row.params,
        "consent": row.consent,
    }


def _org_prompts(request: Request, caller: Caller, after: int, limit: int) -> dict:
    with request.app.state.db.read() as session:
        rows = session.execute(
            select(ServedPrompt, User.username)
            .join(User, User.id == ServedPrompt.user_id)
            .where(ServedPrompt.org_id == caller.org_id, ServedPrompt.id > after)
            .order_by(ServedPrompt.id)
            .limit(limit + 1)
        ).all()
    data = [_prompt_card(row, name) for row, name in rows[:limit]]
    return {"object": "list", "data": data, "has_more": len(rows) > limit}


async def _prompt_reader(request: Request) -> Caller:
    caller = await caller_of(request)
    if caller.anonymous:
        raise APIError(401, "Reading stored prompts needs an API key.", type="authentication_error")
    return caller


@router.get("/v1/prompts")
async def list_prompts(request: Request, after: int = 0, limit: int = 100) -> Response:
    """The stored prompts of the caller's organization (never another's), oldest first, ``limit`` at a time."""
    try:
        caller = await _prompt_reader(request)
        if not 1 <= limit <= 1000:
            raise APIError(400, f"'limit' must be in [1, 1000], got {limit}.", param="limit")
    except APIError as e:
        return e.response()
    return JSONResponse(await run_in_threadpool(_org_prompts, request, caller, after, limit))


@router.get("/v1/prompts/{prompt_id}")
async def get_prompt(request: Request, prompt_id: int) -> Response:
    try:
        caller = await _prompt_reader(request)
    except APIError as e:
        return e.response()

    def read() -> dict | None:
        with request.app.state.db.read() as session:
            row = session.execute(
                select(ServedPrompt, User.username)
                .join(User, User.id == ServedPrompt.user_id)
                .where(ServedPrompt.id == prompt_id, ServedPrompt.org_id == caller.org_id)
            ).first()
        return None if row is None else _prompt_card(*row)

    card = await run_in_threadpool(read)
    if card is None:  # another organization's prompt looks exactly like one that does not exist
        return APIError(404, f"No prompt {prompt_id}.", param="prompt_id", code="not_found").response()
    return JSONResponse(card)


@router.get("/health")
async def health(request: Request) -> Response:
    serving = request.app.state.serving
    dead = [m.name for m in serving.models.values() if not m.engine.alive()]
    if dead:
        return JSONResponse({"status": "error", "stopped": dead}, status_code=503)
    return JSONResponse({"status": "ok", "models": list(serving.models)})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text: per model, the rows being decoded and the decode steps run."""
    lines = [
        "# TYPE instructrl_running_sequences gauge",
        "# TYPE instructrl_decode_steps_total counter",
    ]
    for m in request.app.state.serving.models.values():
        lines.append(f'instructrl_running_sequences{{model="{m.name}"}} {m.engine.running}')
        lines.append(f'instructrl_decode_steps_total{{model="{m.name}"}} {m.engine.steps}')
    return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
