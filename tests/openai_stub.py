"""A small OpenAI-compatible HTTP server for tests (no network: it listens on 127.0.0.1).

    from tests.openai_stub import OpenAIStub, scripted, from_generator

    with OpenAIStub(scripted(["first answer", "second answer"])) as server:
        gen = OpenAIGenerator(server.base_url, "stub")
        ...
        server.requests  # every request body received, in order

It serves ``POST /v1/completions``, ``POST /v1/chat/completions`` and ``GET /v1/models`` from a
handler: ``handler(request: StubRequest) -> str | (str, finish_reason)``. The server applies the
request's ``stop`` strings to the handler's text (finish_reason ``"stop"`` when one cuts it) and
answers ``n`` choices by calling the handler ``n`` times. Helpers build handlers from a script of
replies (:func:`scripted`), a function of the prompt (:func:`by_prompt`), or any
``instructrl.models.generation.Generator`` such as the tiny model (:func:`from_generator`).
``api_key`` makes the server require ``Authorization: Bearer <api_key>`` (401 otherwise);
``fail_next(k, status)`` makes the next ``k`` requests fail with ``status`` (to test retries).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclasses.dataclass
class StubRequest:
    kind: str  # "completions" or "chat"
    prompt: str | None  # completions
    messages: list | None  # chat
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    stop: list[str]
    seed: int | None
    body: dict  # the whole request body

    @property
    def text(self) -> str:
        """The prompt, or for chat the last user message."""
        if self.kind == "completions":
            return self.prompt or ""
        return next((m["content"] for m in reversed(self.messages or []) if m.get("role") == "user"), "")


Handler = Callable[[StubRequest], "str | tuple[str, str]"]


def scripted(replies: Iterable[str | tuple[str, str]], *, cycle: bool = False) -> Handler:
    """Answer with ``replies`` in order (thread-safe); when they run out, fail the request with 500
    (or start again when ``cycle``)."""
    it = itertools.cycle(list(replies)) if cycle else iter(list(replies))
    lock = threading.Lock()

    def handler(req: StubRequest):
        with lock:
            try:
                return next(it)
            except StopIteration:
                raise RuntimeError("the scripted replies ran out") from None

    return handler


def by_prompt(fn: Callable[[str], str | tuple[str, str]]) -> Handler:
    """Answer with ``fn(prompt text)`` (the last user message for chat requests)."""
    return lambda req: fn(req.text)


def from_generator(generator: Any) -> Handler:
    """Answer with an ``instructrl`` Generator (e.g. an HFGenerator on the tiny model); requests are
    served one at a time."""
    lock = threading.Lock()

    def handler(req: StubRequest):
        prompt = req.prompt if req.kind == "completions" else req.messages
        with lock:
            g = generator.generate(
                [prompt],
                raw=req.kind == "completions",
                max_new_tokens=req.max_tokens or 16,
                temperature=req.temperature if req.temperature is not None else 1.0,
                top_p=req.top_p or 1.0,
                stop=req.stop or None,
                seed=req.seed,
            )[0]
        return g.text, g.finish_reason

    return handler


class OpenAIStub:
    """An OpenAI-compatible server on ``127.0.0.1:<free port>`` in a daemon thread."""

    def __init__(self, handler: Handler, *, api_key: str | None = None, model: str = "stub"):
        self.handler, self.api_key, self.model = handler, api_key, model
        self.requests: list[dict] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        stub = self

        class _RequestHandler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, obj: dict) -> None:
                data = json.dumps(obj).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if stub.api_key is None or self.headers.get("Authorization") == f"Bearer {stub.api_key}":
                    return True
                self._send(401, {"error": {"message": "invalid API key", "type": "invalid_request_error"}})
                return False

            def do_GET(self) -> None:
                if not self._authorized():
                    return
                if self.path.rstrip("/") == "/v1/models":
                    self._send(
                        200, {"object": "list", "data": [{"id": stub.model, "object": "model", "owned_by": "stub"}]}
                    )
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                if not self._authorized():
                    return
                kind = {"/v1/completions": "completions", "/v1/chat/completions": "chat"}.get(self.path.rstrip("/"))
                if kind is None:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                except json.JSONDecodeError:
                    self._send(400, {"error": {"message": "body is not JSON"}})
                    return
                with stub._lock:
                    stub.requests.append(body)
                    fail = stub._failures.pop(0) if stub._failures else None
                if fail is not None:
                    self._send(fail, {"error": {"message": f"scheduled failure {fail}"}})
                    return
                stop = body.get("stop") or []
                stop = [stop] if isinstance(stop, str) else list(stop)
                req = StubRequest(
                    kind,
                    body.get("prompt"),
                    body.get("messages"),
                    body.get("max_tokens"),
                    body.get("temperature"),
                    body.get("top_p"),
                    stop,
                    body.get("seed"),
                    body,
                )
                if (kind == "completions" and not isinstance(req.prompt, str)) or (kind == "chat" and not req.messages):
                    self._send(400, {"error": {"message": "missing 'prompt' (completions) or 'messages' (chat)"}})
                    return
                choices = []
                try:
                    for i in range(int(body.get("n") or 1)):
                        text, reason = stub._answer(req)
                        choice = {"index": i, "finish_reason": reason, "logprobs": None}
                        if kind == "completions":
                            choice["text"] = text
                        else:
                            choice["message"] = {"role": "assistant", "content": text}
                        choices.append(choice)
                except Exception as e:  # the handler failed: a server error, as a real server would answer
                    self._send(500, {"error": {"message": f"{type(e).__name__}: {e}"}})
                    return
                self._send(
                    200,
                    {
                        "id": f"stub-{len(stub.requests)}",
                        "object": "text_completion" if kind == "completions" else "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", stub.model),
                        "choices": choices,
                        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                    },
                )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _RequestHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _answer(self, req: StubRequest) -> tuple[str, str]:
        out = self.handler(req)
        text, reason = (out, "stop") if isinstance(out, str) else out
        hits = [i for s in req.stop if s and (i := text.find(s)) >= 0]
        if hits:
            return text[: min(hits)], "stop"
        return text, reason

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """The API root to give a client, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def fail_next(self, k: int, status: int = 503) -> None:
        with self._lock:
            self._failures.extend([status] * k)

    def start(self) -> OpenAIStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
