"""Schema migrations (Alembic), run in code: ``upgrade(db)`` brings a database to the newest schema.

``instructrl label serve`` calls it on start, so an older database is upgraded in place and a new one
is created. The migration scripts are in ``migrations/versions``; there is no alembic.ini to keep.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from instructrl.web.db import Database

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head() -> str:
    """The newest revision the code knows."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current(db: Database) -> str | None:
    """The revision the database is at (None: never migrated)."""
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> str | None:
    """Migrate ``db`` to ``revision``; returns the revision it is at afterwards."""
    before = current(db)
    if before == head() and revision == "head":
        return before
    cfg = _config()
    # a write like any other: on SQLite it takes the write lock first (BEGIN IMMEDIATE)
    with db.engine.execution_options(instructrl_write=True).begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
    after = current(db)
    log.info("database schema upgraded from %s to %s", before or "(empty)", after)
    return after
