"""The workbench on a real PostgreSQL server that the test starts itself (initdb and pg_ctl from Debian's
``postgresql`` package, which .ci/run installs; as root they run as the ``postgres`` user): the
migrations build exactly the models' tables there, and ten labelers labeling at once over HTTP
export exactly what they sent, ties and a skip included."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select

from instructrl.cli import main
from instructrl.records import Ranking, read_jsonl
from instructrl.web.db import Database
from instructrl.web.migrate import head, upgrade
from instructrl.web.models import Assignment, Base, Label, Task, User

from .conftest import free_port, samples_for, serving, unique


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


@pytest.fixture(scope="module")
def postgres_url():
    bindir = _postgres_bin()
    if bindir is None or not (bindir / "initdb").exists():
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed: apt-get install -y postgresql (.ci/run does it)")
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[web]'")
    import psycopg

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
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(bindir / "pg_ctl", "-D", data, "-l", folder / "server.log", "-o", options, "-w", "start")
    try:
        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE instructrl")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/instructrl"
    finally:
        run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_migrations_on_postgres(postgres_url):
    db = Database(postgres_url)
    assert upgrade(db) == head()
    with db.engine.connect() as connection:
        assert connection.dialect.name == "postgresql"
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
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
