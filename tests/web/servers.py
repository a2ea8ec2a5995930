"""Real servers for the web tests and benchmarks/workbench_load.py (no pytest here): ``instructrl label serve``
as a subprocess on a free port of 127.0.0.1, and a PostgreSQL server of its own (initdb and pg_ctl from
Debian's ``postgresql`` package, which .ci/run installs; as root they run as the ``postgres`` user)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """One ``instructrl label serve`` process (with ``workers=N``, the supervisor of N worker processes)."""

    proc: subprocess.Popen
    url: str
    port: int
    log_path: Path

    def kill(self) -> None:
        """``kill -9``, as a crash or an out-of-memory kill would end it: nothing gets to clean up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def launch(
    db_url: str,
    folder: Path,
    args: Sequence[str] = (),
    port: int | None = None,
    wait_s: float = 60,
    stage: Sequence[str] = ("label", "serve"),
) -> Server:
    """Start ``instructrl label serve db_url=... port=... *args`` (or another ``stage``) in ``folder`` (in a
    process group of its own, so that :meth:`Server.kill` reaches the worker processes too) and wait until it
    answers."""
    port = port or free_port()
    log_path = folder / f"server-{port}-{time.monotonic_ns()}.log"
    command = [sys.executable, "-m", "instructrl.cli", *stage, f"db_url={db_url}", f"port={port}", *args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            start_new_session=True,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", port, log_path)
    deadline = time.monotonic() + wait_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server ended with code {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the server did not answer within {wait_s:.0f} s:\n{log_path.read_text()}")
        time.sleep(0.1)


def postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


@contextlib.contextmanager
def postgres_server(fsync: bool = False) -> Iterator[str]:
    """A PostgreSQL server of its own on a free port, with an empty database ``instructrl``; yields its
    SQLAlchemy URL. ``fsync=False`` (the tests' default) trades crash safety of the *database server* for
    speed; the benchmark keeps it on, as a team's server would."""
    import psycopg  # the web extra's driver; only here that it is needed

    bindir = postgres_bin()
    if bindir is None or not (bindir / "initdb").exists():
        raise FileNotFoundError("PostgreSQL's initdb/pg_ctl are not installed: apt-get install -y postgresql")
    folder = Path(tempfile.mkdtemp(prefix="instructrl-pg-"))
    as_root = os.geteuid() == 0
    # initdb refuses to run as root: the server runs as the postgres user, in a folder it owns
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()

    def run(*args) -> None:
        subprocess.run([*prefix, *map(str, args)], check=True, capture_output=True)

    run(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not fsync:
        options += " -c fsync=off"
    run(bindir / "pg_ctl", "-D", data, "-l", folder / "server.log", "-o", options, "-w", "start")
    try:
        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE instructrl")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/instructrl"
    finally:
        run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)
