"""The database layer: the migrations build exactly the models' tables, and an 0001 database with labels
upgrades to 0002 without losing one; SQLite runs in WAL mode; writers
from several connections (as from several processes) all get through, none sees "database is locked"."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, func, insert, inspect, select

from instructrl.label.workbench.export import iter_export
from instructrl.web.db import Database, utcnow
from instructrl.web.migrate import current, head, upgrade
from instructrl.web.models import Base, LoginAttempt, Task


def test_migrations_build_exactly_the_models(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'new' / 'fresh.db'}")  # the folder is created
    assert current(db) is None
    assert upgrade(db) == head() == "0004"
    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    tables = set(inspect(db.engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    assert upgrade(db) == "0004"  # a second start changes nothing
    db.dispose()


def fill_0001(db: Database) -> None:
    """Rows as a server at schema 0001 wrote them (through the tables as they were then, not today's models):
    two labelers' rankings of one item, ties included, a skip, and a demonstration."""
    tables = MetaData()
    tables.reflect(db.engine)
    t = tables.tables
    now = utcnow()
    rows = {
        "organizations": [{"id": 1, "name": "org", "created_at": now}],
        "users": [
            {"id": n, "org_id": 1, "username": f"u{n}", "display_name": "", "password_hash": "x", "role": "labeler"}
            | {"active": True, "created_at": now}
            for n in (1, 2)
        ],
        "projects": [
            {"id": 1, "org_id": 1, "name": "p", "description": "", "priority": "helpfulness", "created_at": now}
        ],
        "instruction_versions": [{"id": 1, "project_id": 1, "version": 1, "text": "Be kind.", "created_at": now}],
        "tasks": [
            {
                "id": 1,
                "project_id": 1,
                "kind": "rank",
                "external_id": "q1",
                "prompt": "Q?",
                "meta": {},
                "created_at": now,
            }
            | {"responses": [{"text": t, "policy": "sft", "sample_id": t} for t in ("a", "b", "c")]},
            {"id": 2, "project_id": 1, "kind": "demonstrate", "external_id": "d1", "prompt": "Say hi."}
            | {"responses": None, "meta": {"type": "plain"}, "created_at": now},
        ],
        "assignments": [
            {"id": a, "task_id": task, "user_id": user, "status": status, "order": order, "created_at": now}
            for a, task, user, status, order in [
                (1, 1, 1, "done", [2, 0, 1]),
                (2, 1, 2, "done", [0, 1, 2]),
                (3, 2, 1, "skipped", None),
                (4, 2, 2, "done", None),
            ]
        ],
        "labels": [
            {"id": a, "assignment_id": a, "task_id": task, "project_id": 1, "user_id": user, "kind": kind}
            | {"payload": payload, "schema_version": 1, "instruction_version_id": 1, "skip_reason": reason}
            | {"opened_at": now, "created_at": now}
            for a, task, user, kind, payload, reason in [
                (1, 1, 1, "rank", {"likert": [5, 5, 2], "flags": [{}, {}, {}], "ranks": [1, 1, 3]}, None),
                (2, 1, 2, "rank", {"likert": [6, 3, 2], "flags": [{}, {}, {}], "ranks": [1, 2, 3]}, None),
                (3, 2, 1, "demonstrate", None, "not my language"),
                (4, 2, 2, "demonstrate", {"response": "Hi!"}, None),
            ]
        ],
    }
    with db.engine.begin() as connection:
        for table, values in rows.items():
            connection.execute(insert(t[table]), values)


def test_upgrade_from_0001_keeps_every_label(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    assert upgrade(db, "0001") == "0001"
    fill_0001(db)
    with db.engine.connect() as connection:
        before = {
            name: connection.exec_driver_sql(f"SELECT * FROM {name} ORDER BY id").all()
            for name in ("labels", "assignments")
        }
    for revision in ("0002", head()):  # gold rankings, then every later revision
        assert upgrade(db, revision) == revision
        with db.engine.connect() as connection:
            after = {
                name: connection.exec_driver_sql(f"SELECT * FROM {name} ORDER BY id").all()
                for name in ("labels", "assignments")
            }
        assert after == before
    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    with db.read() as session:
        assert [(t.id, t.gold, t.gold_at) for t in session.scalars(select(Task).order_by(Task.id))] == [
            (1, None, None),
            (2, None, None),
        ]
    assert [(r.labeler_id, r.ranks, r.likert) for r in iter_export(db, 1, "rankings")] == [
        ("u1", [1, 1, 3], [5, 5, 2]),
        ("u2", [1, 2, 3], [6, 3, 2]),
    ]
    assert [(s["labeler_id"], s["reason"], s["instruction_version"]) for s in iter_export(db, 1, "skips")] == [
        ("u1", "not my language", 1)
    ]
    assert [d.response for d in iter_export(db, 1, "demonstrations")] == ["Hi!"]
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
