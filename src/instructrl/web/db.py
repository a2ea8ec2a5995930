"""The database: SQLite in WAL mode by default, PostgreSQL by URL, with writes that never fail on a lock.

SQLite allows one writer at a time. A write transaction that starts as a reader and later tries to
write can fail at once with "database is locked" (SQLite cannot wait there without risking a
deadlock), which is how other labeling tools lose labels under load. So every write here

* holds a process-wide lock (threads of one server queue up instead of racing), and
* opens its transaction with ``BEGIN IMMEDIATE`` (it takes the write lock first, and a second
  process waits for it up to ``busy_timeout`` instead of failing).

Reads never take the lock: in WAL mode they see the last commit while a write goes on. PostgreSQL
(``postgresql+psycopg://...``) needs neither and gets neither.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

#: how long a SQLite writer waits for another process's write before giving up, in milliseconds
BUSY_TIMEOUT_MS = 60_000


class InputError(ValueError):
    """Bad input to a web command (a name already taken, an unknown project): one line for the CLI."""


def utcnow() -> datetime:
    """Now in UTC, without a time zone (stored the same way in SQLite and PostgreSQL)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def iso(moment: datetime | None) -> str | None:
    """A stored UTC time as ISO 8601 with a Z, as exports write it."""
    return None if moment is None else moment.isoformat() + "Z"


def _sqlite_engine(url: Any) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # the driver's own transaction handling is switched off so that BEGIN is ours to emit
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # FULL: a commit is on disk before the server answers, so an acknowledged label survives a crash
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        write = connection.get_execution_options().get("instructrl_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class Database:
    """One engine and its sessions: ``with db.read() as s`` and ``with db.write() as s`` (commits at the end)."""

    def __init__(self, url: str):
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            self.engine = _sqlite_engine(self.url)
        else:
            self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(
            self.engine.execution_options(instructrl_write=True), expire_on_commit=False
        )

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading; whatever it changed is rolled back."""
        with self._read_sessions() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose work commits as one transaction when the block ends (rolled back on an error)."""
        with self._write_lock or nullcontext(), self._write_sessions() as session, session.begin():
            yield session

    def stream(self, statement: Any, batch: int = 500) -> Iterator[Any]:
        """Rows of ``statement`` fetched ``batch`` at a time (a server-side cursor on PostgreSQL), never all
        at once: for exports of any size."""
        with self._read_sessions() as session:
            result = session.execute(statement.execution_options(yield_per=batch))
            yield from result

    def dispose(self) -> None:
        self.engine.dispose()
