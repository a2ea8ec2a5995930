"""Load: 50 labelers (HTTP clients, one thread and one connection each) submit 2,000 labels at once, against the
SQLite default and against a real PostgreSQL server. No label is lost, none is stored differently from what
was sent, no request fails; p50 and p99 latency are printed (no assertion on time: this machine is shared)."""

from __future__ import annotations

from . import load
from .conftest import serving, unique

LABELERS = 50
LABELS = 2000


def _load(workbench, what: str, capsys) -> None:
    plan = load.setup(workbench.db, unique("load"), LABELERS, LABELS)
    assert plan.total == LABELS and {len(items) for items in plan.work.values()} == {LABELS // LABELERS}
    outcome = load.run([workbench.url], plan)
    with capsys.disabled():
        print("\n" + outcome.summary(f"{LABELERS} labelers on {what}"))
    assert outcome.statuses == {303: LABELS}  # no 5xx, no 4xx either
    assert outcome.no_answer == [] and len(outcome.retried) <= LABELERS  # at most one stale connection each
    problems, stored = load.check(workbench.db, plan, outcome.acked)
    assert problems == []
    assert stored == LABELS


def test_fifty_labelers_on_sqlite(workbench, capsys):
    _load(workbench, "SQLite", capsys)


def test_fifty_labelers_on_postgres(postgres_url, tmp_path, capsys):
    with serving(postgres_url, tmp_path) as workbench:
        _load(workbench, "PostgreSQL", capsys)
