"""The workbench on a real PostgreSQL server that the tests start themselves (conftest's ``postgres_url``): the
migrations build exactly the models' tables there, and ten labelers labeling at once over HTTP
export exactly what they sent, ties and a skip included."""

from __future__ import annotations

import json
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select

from instructrl.cli import main
from instructrl.label.workbench.agreement import RankLabel, batches, by_item, item_table, pairwise
from instructrl.label.workbench.export import iter_export
from instructrl.records import Ranking, read_jsonl
from instructrl.web.db import Database
from instructrl.web.migrate import head, upgrade
from instructrl.web.models import Assignment, Base, Label, Task, User

from .conftest import samples_for, serving, unique
from .test_db import fill_0001


def test_migrations_on_postgres(postgres_url):
    db = Database(postgres_url)
    assert upgrade(db) == head()
    with db.engine.connect() as connection:
        assert connection.dialect.name == "postgresql"
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    db.dispose()


def test_upgrade_from_0001_on_postgres(postgres_url):
    """A database at schema 0001 holding labels upgrades to the newest without losing one (the same
    check as tests/web/test_db.py, on PostgreSQL's ALTER TABLE)."""
    import psycopg  # the fixture made sure it is installed

    with psycopg.connect(postgres_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE upgrade_from_0001")
    url = postgres_url.rsplit("/", 1)[0] + "/upgrade_from_0001"
    db = Database(url)
    assert upgrade(db, "0001") == "0001"
    fill_0001(db)
    with db.engine.connect() as connection:
        before = connection.exec_driver_sql("SELECT * FROM labels ORDER BY id").all()
    assert upgrade(db) == head()
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT * FROM labels ORDER BY id").all() == before
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    assert [r.ranks for r in iter_export(db, 1, "rankings")] == [[1, 1, 3], [1, 2, 3]]
    db.dispose()


def test_labelers_at_once_on_postgres(postgres_url, tmp_path):
    with serving(postgres_url, tmp_path) as workbench:
        org_name = unique("org")
        org = workbench.org(org_name)
        names = [workbench.user(org) for _ in range(10)]
        project = unique("pg-project")
        samples = [
            s for i in range(20) for s in samples_for(f"g{i}", f"Question {i}?", [f"r{i}.{j}" for j in range(3)])
        ]
        path = workbench.write_jsonl(samples)
        args = ["label", "import", f"file={path}", f"project={project}", f"org={org_name}", "overlap=0.5"]
        assert main([*args, f"db_url={postgres_url}"]) == 0
        with workbench.db.read() as session:
            rows = session.execute(
                select(User.username, Assignment.id, Assignment.order, Task.external_id)
                .join(Assignment, Assignment.user_id == User.id)
                .join(Task, Task.id == Assignment.task_id)
                .where(User.org_id == org)
                .order_by(Assignment.id)
            ).all()
        assert len(rows) == 30  # 10 of the 20 prompts to two labelers
        work: dict[str, list] = {}
        for username, assignment, order, prompt_id in rows:
            work.setdefault(username, []).append((assignment, order, prompt_id))
        clients = {name: workbench.login(name) for name in names}
        sent, skipped, failures = {}, {}, []
        lock = threading.Lock()

        def label(name: str) -> None:
            client, token = clients[name]
            for n, (assignment, order, prompt_id) in enumerate(work[name]):
                if name == names[0] and n == 0:
                    response = client.post(
                        f"/tasks/{assignment}/skip", data={"csrf_token": token, "skip_reason": "ünïcode ✓"}
                    )
                    with lock:
                        skipped[(prompt_id, name)] = "ünïcode ✓"
                else:
                    ranks = [1, 1, 2] if n % 2 else [3, 1, 2]
                    form = {"csrf_token": token}
                    for position, index in enumerate(order):
                        form |= {f"likert_{position}": str(4 + ranks[index]), f"rank_{position}": str(ranks[index])}
                    response = client.post(f"/tasks/{assignment}/submit", data=form)
                    with lock:
                        sent[(prompt_id, name)] = ranks
                if response.status_code != 303:
                    with lock:
                        failures.append((name, assignment, response.status_code))

        threads = [threading.Thread(target=label, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        out = tmp_path / "export"
        assert (
            main(
                ["label", "export", f"project={project}", f"org={org_name}", f"out_dir={out}", f"db_url={postgres_url}"]
            )
            == 0
        )
        rankings = read_jsonl(out / "rankings.jsonl", Ranking)
        assert {(r.meta["prompt_id"], r.labeler_id): r.ranks for r in rankings} == sent
        # the agreement dashboard's queries on PostgreSQL: its numbers are those of the exported rankings
        agreement = json.loads((out / "agreement.json").read_text(encoding="utf-8"))
        expected = pairwise(
            item_table(batches(by_item(RankLabel(r.meta["task_id"], r.labeler_id, tuple(r.ranks)) for r in rankings)))
        )
        assert agreement["pairwise"]["rate"] == pytest.approx(expected.rate)
        assert agreement["pairwise"]["items"] == expected.items > 0
        admin, _ = workbench.login(workbench.user(org, "admin"))
        with workbench.db.read() as session:
            project_id = session.scalar(select(Task.project_id).where(Task.external_id == "g0"))
        assert admin.get(f"/admin/projects/{project_id}/agreement.json").json() == agreement
        assert all(r.likert == [4 + k for k in r.ranks] for r in rankings)
        skips = [json.loads(line) for line in (out / "skips.jsonl").read_text(encoding="utf-8").splitlines()]
        assert {(s["prompt_id"], s["labeler_id"]): s["reason"] for s in skips} == skipped

        # one page sent five times at once (a double click, retries): one label, every answer a redirect
        extra = workbench.write_jsonl(samples_for("race", "Race?", ["a", "b"]))
        assert (
            main(
                [
                    "label",
                    "import",
                    f"file={extra}",
                    f"project={project}",
                    f"org={org_name}",
                    f"labelers={names[1]}",
                    f"db_url={postgres_url}",
                ]
            )
            == 0
        )
        with workbench.db.read() as session:
            (assignment,) = session.scalars(select(Assignment.id).join(Task).where(Task.external_id == "race"))
        client, token = clients[names[1]]
        form = {"csrf_token": token, "likert_0": "3", "likert_1": "3", "rank_0": "1", "rank_1": "1"}
        codes: list[int] = []
        racers = [
            threading.Thread(
                target=lambda: codes.append(client.post(f"/tasks/{assignment}/submit", data=form).status_code)
            )
            for _ in range(5)
        ]
        for thread in racers:
            thread.start()
        for thread in racers:
            thread.join()
        assert codes == [303] * 5
        with workbench.db.read() as session:
            assert session.scalar(select(func.count()).select_from(Label).where(Label.assignment_id == assignment)) == 1
