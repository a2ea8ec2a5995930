"""Many labelers submitting at once over HTTP, and the check that what was acknowledged is what is stored:
shared by tests/web/test_load.py, test_kill.py, test_processes.py and benchmarks/workbench_load.py.

Every labeler is a thread with its own HTTP connection and session, working through its own queue of
rate-and-rank items. The values each form carries are a function of the assignment id (ties and flags
included), so a label stored under the wrong item, half a label or a mixed-up one shows in the check.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
from sqlalchemy import select

from instructrl.label.workbench.export import iter_export
from instructrl.label.workbench.imports import Item, import_items
from instructrl.label.workbench.schema import FLAG_NAMES
from instructrl.web.db import Database
from instructrl.web.models import Assignment, Project, Task, User
from instructrl.web.users import create_user, organization

PASSWORD = "correct horse 1"


@dataclass
class Plan:
    """Who labels what: ``work[username]`` = [(assignment id, display order, task id)] in queue order."""

    project_id: int
    names: list[str]
    work: dict[str, list[tuple[int, list[int], int]]]
    k: int

    @property
    def total(self) -> int:
        return sum(len(items) for items in self.work.values())


def setup(db: Database, tag: str, labelers: int, labels: int, k: int = 4, seed: int = 0) -> Plan:
    """An organization ``tag`` with ``labelers`` labelers and a project of ``labels`` rate-and-rank items
    of ``k`` outputs, each given to one labeler (spread evenly), written straight to the database."""
    with db.write() as session:
        org = organization(session, tag)
        names = [create_user(session, org.id, f"{tag}-l{n}", PASSWORD, "labeler").username for n in range(labelers)]
        project = Project(org_id=org.id, name=f"{tag}-load", description="", priority="helpfulness")
        session.add(project)
        session.flush()
        items = [
            Item(f"Prompt {n} of {tag}?", f"{tag}-p{n}", [{"text": f"answer {n}.{j}"} for j in range(k)], {}, "")
            for n in range(labels)
        ]
        import_items(session, project.id, "rank", items, labelers=names, seed=seed)
        project_id = project.id
    with db.read() as session:
        rows = session.execute(
            select(User.username, Assignment.id, Assignment.order, Assignment.task_id)
            .join(Assignment, Assignment.user_id == User.id)
            .join(Task, Task.id == Assignment.task_id)
            .where(Task.project_id == project_id)
            .order_by(Assignment.id)
        ).all()
    work: dict[str, list[tuple[int, list[int], int]]] = {name: [] for name in names}
    for username, assignment, order, task in rows:
        work[username].append((assignment, list(order), task))
    return Plan(project_id, names, work, k)


def label_for(assignment: int, k: int) -> tuple[list[int], list[int], list[set[str]]]:
    """The ranks (with ties), Likert scores and flags sent for ``assignment``, in the imported order."""
    ranks = [(assignment + 2 * i) % 3 + 1 for i in range(k)]
    likert = [(assignment + i) % 7 + 1 for i in range(k)]
    flags = [{FLAG_NAMES[(assignment + i) % len(FLAG_NAMES)]} if (assignment + i) % 2 else set() for i in range(k)]
    return ranks, likert, flags


def form_for(token: str, assignment: int, order: Sequence[int], k: int) -> dict:
    ranks, likert, flags = label_for(assignment, k)
    form: dict = {"csrf_token": token}
    for position, index in enumerate(order):
        form[f"likert_{position}"] = str(likert[index])
        form[f"rank_{position}"] = str(ranks[index])
        form[f"flags_{position}"] = sorted(flags[index])
    return form


def login(url: str, username: str) -> tuple[httpx.Client, str]:
    """A signed-in client (one keep-alive connection) and its CSRF token."""
    client = httpx.Client(base_url=url, headers={"Accept": "text/html"}, timeout=120)
    page = client.get("/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    response = client.post("/login", data={"csrf_token": token, "username": username, "password": PASSWORD})
    if response.status_code != 303:
        raise RuntimeError(f"sign-in of {username} failed: {response.status_code} {response.text[:300]}")
    landing = client.get(response.headers["location"])
    token = landing.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return client, token


@dataclass
class Outcome:
    """What the clients saw: every answer's status and latency, the assignments acknowledged (303), the
    requests that got no answer, and the time it all took."""

    statuses: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    acked: set[int] = field(default_factory=set)
    no_answer: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)  # sent again once after a closed kept-alive connection
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")

    def summary(self, what: str) -> str:
        rate = len(self.latencies) / self.seconds if self.seconds else float("nan")
        return (
            f"{what}: {len(self.latencies)} submits in {self.seconds:.1f} s = {rate:.0f} labels/s; latency p50 "
            f"{statistics.median(self.latencies) * 1000:.0f} ms, p99 {self.percentile(0.99) * 1000:.0f} ms; "
            f"statuses {dict(self.statuses)}; no answer {len(self.no_answer)}; sent again {len(self.retried)}"
        )


def run(
    urls: Sequence[str],
    plan: Plan,
    resume: threading.Event | None = None,
    on_answer: Callable[[Outcome], None] | None = None,
) -> Outcome:
    """Every labeler of ``plan`` submits its whole queue at once, request ``n`` going to ``urls[n % len]``
    (several servers on one database). A request that gets no answer (the server died) is sent again,
    the same form, once ``resume`` is set (the server is back), as a labeler's browser would retry; without
    ``resume`` that labeler stops. ``on_answer`` is called after every acknowledged submit."""
    outcome = Outcome()
    clients = {name: [login(url, name) for url in urls] for name in plan.names}
    start = threading.Barrier(len(plan.names))

    def labeler(name: str) -> None:
        sessions = clients[name]
        start.wait()
        for n, (assignment, order, _task) in enumerate(plan.work[name]):
            stale_retry = resume is None  # one retry for a kept-alive connection the server had just closed
            while True:
                client, token = sessions[n % len(sessions)]
                began = time.perf_counter()
                try:
                    response = client.post(
                        f"/tasks/{assignment}/submit", data=form_for(token, assignment, order, plan.k)
                    )
                except httpx.TransportError:
                    if stale_retry:
                        # a labeler idle at the start barrier may reuse a connection uvicorn closed after its
                        # keep-alive timeout; httpx does not resend a POST then, a browser does: so do we, once
                        stale_retry = False
                        with outcome.lock:
                            outcome.retried.append(assignment)
                        continue
                    with outcome.lock:
                        outcome.no_answer.append(assignment)
                    if resume is None or not resume.wait(timeout=120):
                        return
                    continue
                elapsed = time.perf_counter() - began
                with outcome.lock:
                    outcome.latencies.append(elapsed)
                    outcome.statuses[response.status_code] += 1
                    if response.status_code == 303:
                        outcome.acked.add(assignment)
                if response.status_code == 303 and on_answer is not None:
                    on_answer(outcome)
                break

    threads = [threading.Thread(target=labeler, args=(name,), daemon=True) for name in plan.names]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcome.seconds = time.perf_counter() - began
    for sessions in clients.values():
        for client, _ in sessions:
            client.close()
    return outcome


def check(db: Database, plan: Plan, acked: set[int]) -> tuple[list[str], int]:
    """Problems with what is stored (none expected), and how many labels there are: every acknowledged
    assignment has its label in the export exactly as sent; every exported label is one that was sent, whole
    (its values those of its assignment); no item has two labels from one labeler."""
    of_task = {(task, name): assignment for name in plan.names for assignment, _, task in plan.work[name]}
    problems, seen = [], set()
    for record in iter_export(db, plan.project_id, "rankings"):
        key = (record.meta["task_id"], record.labeler_id)
        assignment = of_task.get(key)
        if assignment is None:
            problems.append(f"a label nobody sent: {key}")
            continue
        if assignment in seen:
            problems.append(f"two labels for assignment {assignment}")
        seen.add(assignment)
        ranks, likert, flags = label_for(assignment, plan.k)
        wanted = [{name: name in chosen for name in FLAG_NAMES} for chosen in flags]
        if (record.ranks, record.likert, record.flags) != (ranks, likert, wanted):
            problems.append(f"assignment {assignment} stored as {record.ranks} {record.likert}, sent {ranks} {likert}")
    with db.read() as session:
        open_with_label = session.scalars(
            select(Assignment.id)
            .join(Task, Task.id == Assignment.task_id)
            .where(Task.project_id == plan.project_id, Assignment.status == "open", Assignment.id.in_(list(seen)))
        ).all()
        closed = session.scalars(
            select(Assignment.id)
            .join(Task, Task.id == Assignment.task_id)
            .where(Task.project_id == plan.project_id, Assignment.status != "open")
        ).all()
    problems += [f"assignment {a} has a label but is still open" for a in open_with_label]
    problems += [f"assignment {a} is closed but has no label" for a in sorted(set(closed) - seen)]
    problems += [f"acknowledged but lost: assignment {a}" for a in sorted(acked - seen)]
    return problems, len(seen)
