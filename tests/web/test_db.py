"""The database layer: the migrations build exactly the models' tables; SQLite runs in WAL mode; writers
from several connections (as from several processes) all get through, none sees "database is locked"."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select

from instructrl.web.db import Database, utcnow
from instructrl.web.migrate import current, head, upgrade
from instructrl.web.models import Base, LoginAttempt


def test_migrations_build_exactly_the_models(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'new' / 'fresh.db'}")  # the folder is created
    assert current(db) is None
    assert upgrade(db) == head() == "0001"
    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    tables = set(inspect(db.engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    assert upgrade(db) == "0001"  # a second start changes nothing
    db.dispose()


def test_sqlite_settings(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    with db.engine.connect() as connection:
        pragmas = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
        }
    assert pragmas == {"journal_mode": "wal", "busy_timeout": 60000, "foreign_keys": 1, "synchronous": 2}
    assert not Database("postgresql+psycopg://u:p@127.0.0.1:1/x").is_sqlite  # built without connecting
    db.dispose()


def test_concurrent_writers_on_separate_connections_all_commit(tmp_path):
    """Two Database objects share no lock, like two server processes: each write reads, then inserts
    (the pattern that fails at once with "database is locked" under SQLite's default deferred BEGIN)."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    first = Database(url)
    upgrade(first)
    second = Database(url)
    errors: list[BaseException] = []

    def writer(db: Database, name: str) -> None:
        try:
            for i in range(15):
                with db.write() as session:
                    seen = session.scalar(select(func.count()).select_from(LoginAttempt))
                    session.add(LoginAttempt(username=f"{name}-{i}-{seen}", ip="127.0.0.1", success=True, at=utcnow()))
        except BaseException as e:  # collected, and asserted on below
            errors.append(e)

    threads = [
        threading.Thread(target=writer, args=(db, f"{tag}{n}"))
        for n in range(5)
        for tag, db in (("a", first), ("b", second))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with first.read() as session:
        assert session.scalar(select(func.count()).select_from(LoginAttempt)) == 150
    first.dispose()
    second.dispose()
