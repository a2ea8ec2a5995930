"""Several server processes on one SQLite file lose nothing: two ``label serve`` processes with the labelers'
requests alternating between them, and one ``label serve workers=2`` (uvicorn's worker processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructrl.web.db import Database
from instructrl.web.migrate import upgrade

from . import load
from .conftest import unique
from .servers import launch

LABELERS = 10
LABELS = 300


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.parametrize("layout", ["two servers", "workers=2"])
def test_several_processes_on_one_sqlite_file(layout, tmp_path, capsys):
    db_url = f"sqlite:///{tmp_path / 'shared.db'}"
    db = Database(db_url)
    upgrade(db)
    plan = load.setup(db, unique("procs"), LABELERS, LABELS)
    if layout == "two servers":
        servers = [launch(db_url, tmp_path), launch(db_url, tmp_path)]
        urls = [server.url for server in servers]
    else:
        servers = [launch(db_url, tmp_path, ["workers=2"])]
        urls = [servers[0].url]
        # the supervisor's children: two workers (and multiprocessing's resource tracker, if it started one)
        assert len(children(servers[0].proc.pid)) >= 2
    try:
        outcome = load.run(urls, plan)
    finally:
        for server in servers:
            server.stop()
    with capsys.disabled():
        print("\n" + outcome.summary(f"{layout} on one SQLite file"))
    assert outcome.statuses == {303: LABELS}
    problems, stored = load.check(db, plan, outcome.acked)
    assert problems == []
    assert stored == LABELS
    db.dispose()
