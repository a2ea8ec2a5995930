"""20 labelers submitting at once against the SQLite default: every label that was acknowledged is stored,
exactly as sent, and no request fails (the figure other tools lose labels at is "database is locked")."""

from __future__ import annotations

import statistics
import threading
import time

from sqlalchemy import func, select

from instructrl.label.workbench.export import iter_export
from instructrl.web.models import Assignment, Label, User

from .conftest import samples_for

LABELERS = 20
ITEMS_EACH = 5
K = 4


def test_twenty_labelers_submit_at_once(workbench):
    org = workbench.org()
    names = [workbench.user(org) for _ in range(LABELERS)]
    project = workbench.project(org)
    samples = []
    for i in range(LABELERS * ITEMS_EACH):
        samples += samples_for(f"c{i}", f"Prompt number {i}", [f"answer {i}.{j}" for j in range(K)])
    workbench.import_rank(project, samples, names)  # no overlap: round robin, 5 items each
    with workbench.db.read() as session:
        work = {
            name: [
                (a, order)
                for a, order in session.execute(
                    select(Assignment.id, Assignment.order)
                    .join(User, User.id == Assignment.user_id)
                    .where(User.username == name)
                    .order_by(Assignment.id)
                )
            ]
            for name in names
        }
    assert sorted(len(w) for w in work.values()) == [ITEMS_EACH] * LABELERS

    clients = {name: workbench.login(name) for name in names}
    start = threading.Barrier(LABELERS)
    latencies: list[float] = []
    statuses: list[int] = []
    sent: dict[int, list[int]] = {}  # assignment -> ranks in imported order
    lock = threading.Lock()

    def label(name: str) -> None:
        client, token = clients[name]
        start.wait()
        for n, (assignment, order) in enumerate(work[name]):
            # each labeler ranks differently (ties included), so a mixed-up label would show
            ranks = [(index + n + len(name)) % 3 + 1 for index in range(K)]
            form = {"csrf_token": token}
            for position, index in enumerate(order):
                form[f"likert_{position}"] = str(ranks[index] + 2)
                form[f"rank_{position}"] = str(ranks[index])
            began = time.perf_counter()
            response = client.post(f"/tasks/{assignment}/submit", data=form)
            elapsed = time.perf_counter() - began
            with lock:
                latencies.append(elapsed)
                statuses.append(response.status_code)
                if response.status_code == 303:
                    sent[assignment] = ranks

    threads = [threading.Thread(target=label, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client, _ in clients.values():
        client.close()

    assert statuses == [303] * (LABELERS * ITEMS_EACH)
    with workbench.db.read() as session:
        assert (
            session.scalar(select(func.count()).select_from(Label).where(Label.project_id == project))
            == LABELERS * ITEMS_EACH
        )
    exported = {r.meta["task_id"]: r for r in iter_export(workbench.db, project, "rankings")}
    with workbench.db.read() as session:
        task_of = dict(
            session.execute(select(Assignment.id, Assignment.task_id).where(Assignment.id.in_(list(sent)))).all()
        )
    assert len(exported) == LABELERS * ITEMS_EACH
    for assignment, ranks in sent.items():
        record = exported[task_of[assignment]]
        assert record.ranks == ranks
        assert record.likert == [r + 2 for r in ranks]
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))]
    print(f"\n{LABELERS} labelers, {len(latencies)} submits: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
