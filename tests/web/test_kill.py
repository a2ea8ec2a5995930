"""``kill -9`` of the server while labelers submit: no label that was acknowledged (303) is lost, none is stored
half (an item closed without its label, a label that differs from what was sent), and after a restart on the
same database the labelers' browsers send what got no answer again and every item ends with one label."""

from __future__ import annotations

import threading

import pytest

from instructrl.web.db import Database
from instructrl.web.migrate import upgrade

from . import load
from .conftest import unique
from .servers import launch

LABELERS = 6
LABELS = 240
KILL_AFTER = 60  # acknowledged labels before the kill: mid-way, with the other labelers' requests in flight


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_loses_no_acknowledged_label(backend, tmp_path, request, capsys):
    db_url = f"sqlite:///{tmp_path / 'kill.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    db = Database(db_url)
    upgrade(db)
    plan = load.setup(db, unique("kill"), LABELERS, LABELS)
    server = launch(db_url, tmp_path)
    back, killed, kill_lock = threading.Event(), threading.Event(), threading.Lock()
    seen: dict[str, load.Outcome] = {}

    def kill_midway(outcome: load.Outcome) -> None:
        seen["outcome"] = outcome
        if len(outcome.acked) >= KILL_AFTER:
            with kill_lock:
                if not killed.is_set():
                    server.kill()
                    killed.set()

    results: list[load.Outcome] = []
    runner = threading.Thread(target=lambda: results.append(load.run([server.url], plan, back, kill_midway)))
    runner.start()
    try:
        assert killed.wait(timeout=120), "the labelers never got far enough to kill the server"
        assert server.proc.returncode == -9
        # everything acknowledged came from the dead server: it is all on disk, whole, before any retry
        with seen["outcome"].lock:
            acked_before = set(seen["outcome"].acked)
        problems, stored_before = load.check(db, plan, acked_before)
        assert problems == []
        assert KILL_AFTER <= len(acked_before) <= stored_before < LABELS
        restarted = launch(db_url, tmp_path, port=server.port)
    finally:
        back.set()  # the labelers retry (or, if the restart failed, give up on their next error)
        runner.join(timeout=180)
    restarted.stop()
    outcome = results[0]
    with capsys.disabled():
        print(
            f"\nkill -9 on {backend}: killed after {len(acked_before)} acknowledged labels "
            f"({stored_before} stored, {len(outcome.no_answer)} requests unanswered and sent again)"
        )
    assert outcome.no_answer, "the kill should have caught some requests in flight"
    assert set(outcome.statuses) == {303}  # a retry of a label that was stored is answered like the first
    problems, stored = load.check(db, plan, outcome.acked)
    assert problems == []
    assert stored == len(outcome.acked) == LABELS
    db.dispose()
