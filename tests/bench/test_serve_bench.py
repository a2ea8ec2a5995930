"""The client side of benchmarks/serve.py against a small in-process OpenAI-compatible streaming server.

The fake server (FastAPI under uvicorn, in a thread, on a free port of 127.0.0.1) answers every streaming
request with a number of tokens drawn from the request's prompt, split into chunks of one to three tokens, and
records what it sent; the tests check that the load generator counts the same requests and tokens, counts
failures, and times each request.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

fastapi = pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

ROOT = Path(__file__).resolve().parents[2]


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_serve", ROOT / "benchmarks" / "serve.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


class FakeServer:
    """Streams ``tok<j> `` tokens; ``fail_every=k``: every k-th request is answered 500; ``cut_every=k``: every
    k-th request's stream stops before ``[DONE]``; ``usage=False``: no usage chunk even when asked for one."""

    def __init__(self, *, fail_every: int = 0, cut_every: int = 0, usage: bool = True, max_chunk: int = 3):
        self.fail_every, self.cut_every, self.usage, self.max_chunk = fail_every, cut_every, usage, max_chunk
        self.lock = threading.Lock()
        self.count = 0
        self.inflight = 0
        self.max_inflight = 0
        self.sent: list[dict] = []  # one per request: body, tokens, chunks, outcome
        self.app = self._build()

    def _build(self):
        from fastapi.responses import JSONResponse, StreamingResponse

        app = fastapi.FastAPI()

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}

        async def serve(request: fastapi.Request, kind: str):
            body = await request.json()
            with self.lock:
                self.count += 1
                k = self.count
            record = {"body": body, "kind": kind, "tokens": 0, "chunks": 0, "outcome": "ok"}
            self.sent.append(record)
            if self.fail_every and k % self.fail_every == 0:
                record["outcome"] = "500"
                return JSONResponse({"error": {"message": "fake failure"}}, status_code=500)
            prompt = json.dumps(body.get("messages") or body.get("prompt"))
            rng = random.Random(prompt)
            n = rng.randint(1, body["max_tokens"])
            cut = bool(self.cut_every and k % self.cut_every == 0)
            want_usage = self.usage and (body.get("stream_options") or {}).get("include_usage")

            def chunk(text=None, finish=None, usage=None, role=None):
                if kind == "chat":
                    delta = {}
                    if role:
                        delta["role"] = role
                    if text is not None:
                        delta["content"] = text
                    choices = [{"index": 0, "delta": delta, "finish_reason": finish}]
                else:
                    choices = [{"index": 0, "text": text or "", "finish_reason": finish}]
                obj = {"id": f"r{k}", "object": "chunk", "model": "fake-model", "choices": choices}
                if usage is not None:
                    obj = {**obj, "choices": [], "usage": usage}
                return f"data: {json.dumps(obj)}\n\n"

            async def stream():
                self.inflight += 1
                self.max_inflight = max(self.max_inflight, self.inflight)
                try:
                    if kind == "chat":
                        yield chunk(role="assistant")  # a chunk without text: not the first token
                    yield ": keep-alive comment\n\n"
                    j = 0
                    while j < n:
                        size = min(rng.randint(1, self.max_chunk), n - j)
                        yield chunk("".join(f"tok{j + i} " for i in range(size)))
                        record["tokens"] += size
                        record["chunks"] += 1
                        j += size
                        await asyncio.sleep(0.002)
                        if cut and j >= n // 2:
                            record["outcome"] = "cut"
                            return
                    yield chunk(finish="length" if n == body["max_tokens"] else "stop")
                    if want_usage:
                        yield chunk(usage={"prompt_tokens": 5, "completion_tokens": n, "total_tokens": n + 5})
                    yield "data: [DONE]\n\n"
                finally:
                    self.inflight -= 1

            return StreamingResponse(stream(), media_type="text/event-stream")

        @app.post("/v1/chat/completions")
        async def chat(request: fastapi.Request):
            return await serve(request, "chat")

        @app.post("/v1/completions")
        async def completions(request: fastapi.Request):
            return await serve(request, "completions")

        return app

    def ok_tokens(self) -> int:
        return sum(r["tokens"] for r in self.sent if r["outcome"] == "ok")

    def failures(self) -> int:
        return sum(r["outcome"] != "ok" for r in self.sent)


@pytest.fixture
def serve_fake():
    """``serve_fake(fake) -> base_url``: runs the fake under uvicorn until the test ends."""
    running = []

    def start(fake: FakeServer) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(fake.app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.time() + 30
        while not server.started:
            assert time.time() < deadline, "the fake server did not start"
            time.sleep(0.01)
        running.append((server, thread, sock))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread, sock in running:
        server.should_exit = True
        thread.join(10)
        sock.close()


PROMPTS = [f"prompt number {i}: say something" for i in range(7)] + [
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a chat prompt"}]
]


def test_counts_what_the_server_sent(serve_fake):
    fake = FakeServer()
    url = serve_fake(fake)
    result = bench.run_load(url, "fake-model", PROMPTS, concurrency=3, requests=11, max_tokens=12, seed=7)

    assert len(result.results) == fake.count == 11
    assert result.failed == fake.failures() == 0
    assert result.output_tokens == fake.ok_tokens()
    # each request's count is the server's, from usage (the chunks held 1 to 3 tokens each)
    sent = {json.dumps(r["body"]["messages"]): r["tokens"] for r in fake.sent}
    for r in result.results:
        prompt = PROMPTS[r.prompt_index % len(PROMPTS)]
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        assert r.output_tokens == sent[json.dumps(messages)]
        assert r.token_source == "usage"
        assert r.text.split() == [f"tok{j}" for j in range(r.output_tokens)]
        assert r.ttft is not None and 0 < r.ttft <= r.latency
    assert sum(r["chunks"] for r in fake.sent) < fake.ok_tokens()  # so counting chunks would be wrong
    # the prompts went in order, each once, with the load's settings
    assert sorted(r.prompt_index for r in result.results) == list(range(11))
    for record in fake.sent:
        body = record["body"]
        assert body["stream"] is True and body["max_tokens"] == 12 and body["temperature"] == 0.0
        assert body["seed"] == 7 and body["stream_options"] == {"include_usage": True}
        assert body["model"] == "fake-model"
    assert fake.max_inflight == 3

    summary = result.summary()
    assert summary["requests"] == summary["completed"] == 11
    assert summary["output_tokens"] == fake.ok_tokens()
    assert summary["out_tok_per_s"] == pytest.approx(fake.ok_tokens() / result.wall_s)
    assert summary["ttft_p50_ms"] == pytest.approx(bench.percentile([r.ttft for r in result.results], 50) * 1000)


def test_failures_are_counted_and_their_tokens_are_not(serve_fake):
    fake = FakeServer(fail_every=4, cut_every=5)
    url = serve_fake(fake)
    result = bench.run_load(url, "fake-model", PROMPTS, concurrency=2, requests=20, max_tokens=10)

    assert fake.count == len(result.results) == 20
    assert fake.failures() == result.failed > 0
    assert result.output_tokens == fake.ok_tokens()
    errors = [r.error for r in result.results if not r.ok]
    assert any("HTTP 500" in e for e in errors)
    assert any("[DONE]" in e for e in errors)
    assert result.summary()["completed"] == 20 - fake.failures()


def test_without_usage_tokens_are_counted_from_the_text(serve_fake):
    fake = FakeServer(usage=False, max_chunk=1)
    url = serve_fake(fake)
    by_chunks = bench.run_load(url, "fake-model", PROMPTS, concurrency=2, requests=6, max_tokens=9)
    assert {r.token_source for r in by_chunks.results} == {"chunks"}
    assert by_chunks.output_tokens == fake.ok_tokens()

    fake2 = FakeServer(usage=False, max_chunk=3)
    url2 = serve_fake(fake2)
    by_text = bench.run_load(
        url2,
        "fake-model",
        PROMPTS,
        concurrency=2,
        requests=6,
        max_tokens=9,
        endpoint="completions",
        count_tokens=lambda text: len(text.split()),
    )
    assert {r.token_source for r in by_text.results} == {"tokenizer"}
    assert by_text.output_tokens == fake2.ok_tokens()
    assert all(r["kind"] == "completions" and isinstance(r["body"]["prompt"], str) for r in fake2.sent)


def test_percentile_matches_linear_interpolation():
    np = pytest.importorskip("numpy")
    rng = random.Random(3)
    for n in (1, 2, 5, 40):
        xs = [rng.random() for _ in range(n)]
        for q in (0, 10, 50, 90, 100):
            assert bench.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_ratios_pair_loads_by_concurrency():
    servers = {
        "ours": {"loads": [{"concurrency": 1, "out_tok_per_s": 30.0, "ttft_p50_ms": 50.0}]},
        "hf": {
            "loads": [
                {"concurrency": 1, "out_tok_per_s": 10.0, "ttft_p50_ms": 200.0},
                {"concurrency": 8, "out_tok_per_s": 12.0, "ttft_p50_ms": 900.0},
            ]
        },
        "llamacpp": {"skipped": "not installed"},
    }
    table = bench.ratios(servers)
    assert list(table) == ["ours/hf"]
    assert table["ours/hf"] == [{"concurrency": 1, "out_tok_per_s": 3.0, "ttft_p50": 0.25}]
