"""The workbench inside ``instructrl run``: publish a step's tasks, wait for people (and bots) to label
them, then hand their labels to the rest of the loop.

A step that takes its labels from the workbench (``workbench.steps``) imports its items once into a
project of its own (``<workbench.project>-demonstrations`` or ``-rankings``), then waits until every item
of the project is labeled or skipped by everyone it was given to. Waiting is resumable: with
``workbench.wait`` seconds spent (0: at once) the run stops with :class:`WaitingForLabels` (exit code 3),
and the same command run again later finds the project, imports nothing twice, and goes on from there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from instructrl.label.workbench.dashboard import write_report
from instructrl.label.workbench.export import export_project
from instructrl.label.workbench.imports import Item, import_items, project_in_org, publish_instructions
from instructrl.web.db import Database, InputError
from instructrl.web.migrate import upgrade
from instructrl.web.models import Assignment, Task, User

log = logging.getLogger(__name__)


class WaitingForLabels(Exception):
    """The workbench does not have all the labels a step needs yet: label them, then run again."""


def publish(
    db: Database,
    *,
    org: str,
    project: str,
    kind: str,
    items: Sequence[Item],
    labelers: Sequence[str],
    overlap: float,
    per_item: int,
    seed: int,
    instructions: str,
) -> int:
    """The project's id, its tasks created first if it has none (one transaction: all of them or none).

    A project that already holds tasks is this step's earlier import when it holds exactly these items
    (the same prompts with the same responses, in order); anything else, e.g. the tasks of an earlier run
    whose SFT model sampled other responses, is refused rather than trained on. Who got which task was
    decided by that first import."""
    upgrade(db)
    with db.write() as session:
        found = project_in_org(session, org, project, create_priority="helpfulness")
        existing = [
            (external_id, prompt, [r["text"] for r in responses or []])
            for external_id, prompt, responses in session.execute(
                select(Task.external_id, Task.prompt, Task.responses)
                .where(Task.project_id == found.id)
                .order_by(Task.id)
            )
        ]
        wanted = [(i.external_id[:200], i.prompt, [r["text"] for r in i.responses or []]) for i in items]
        if existing:
            if existing != wanted:
                raise InputError(
                    f"workbench project {project!r} already holds {len(existing)} tasks that are not this step's "
                    "items (another run, or this run before a change that redid the step); set workbench.project "
                    "to a new name"
                )
            return found.id
        publish_instructions(session, found.id, instructions, None)
        summary = import_items(
            session, found.id, kind, items, labelers=labelers, overlap=overlap, per_item=per_item, seed=seed
        )
        log.info("workbench: %s", summary)
        return found.id


def open_counts(db: Database, project_id: int) -> tuple[int, int]:
    """``(items with an open assignment of an active user, items)`` of a project: the assignments of a
    deactivated labeler are not waited for (their finished labels count)."""
    with db.read() as session:
        total = session.scalar(select(func.count()).select_from(Task).where(Task.project_id == project_id))
        waiting = session.scalar(
            select(func.count(func.distinct(Assignment.task_id)))
            .join(Task, Task.id == Assignment.task_id)
            .join(User, User.id == Assignment.user_id)
            .where(Task.project_id == project_id, Assignment.status == "open", User.active.is_(True))
        )
    return int(waiting or 0), int(total or 0)


def who_is_waited_for(db: Database, project_id: int) -> str:
    """``alice 3, bob 1``: the active users with open assignments in the project, and how many."""
    with db.read() as session:
        rows = session.execute(
            select(User.username, func.count())
            .join(Assignment, Assignment.user_id == User.id)
            .join(Task, Task.id == Assignment.task_id)
            .where(Task.project_id == project_id, Assignment.status == "open", User.active.is_(True))
            .group_by(User.username)
            .order_by(User.username)
        ).all()
    return ", ".join(f"{name} {count}" for name, count in rows)


def wait_for_labels(
    db: Database, project_id: int, name: str, *, wait: float | None, poll: float, progress: bool = True
) -> None:
    """Return once no item of the project is open; :class:`WaitingForLabels` after ``wait`` seconds
    (None: wait as long as it takes)."""
    from tqdm.auto import tqdm

    waiting, total = open_counts(db, project_id)
    if not waiting:
        return
    start = time.monotonic()
    bar = tqdm(total=total, initial=total - waiting, desc=f"labels of {name}", unit="item", disable=not progress)
    try:
        while waiting:
            if wait is not None and time.monotonic() - start >= wait:
                raise WaitingForLabels(
                    f"workbench project {name!r}: {waiting} of {total} items still wait for labels (open "
                    f"assignments: {who_is_waited_for(db, project_id)}); label them (instructrl label serve, or "
                    "instructrl label bot), then run the same command again: the finished steps are kept"
                )
            time.sleep(poll if wait is None else max(0.0, min(poll, wait - (time.monotonic() - start))))
            before = waiting
            waiting, total = open_counts(db, project_id)
            bar.update(before - waiting)
    finally:
        bar.close()


def collect(db: Database, project_id: int, out_dir: str | Path) -> dict[str, Any]:
    """The project's labels as records under ``out_dir`` (rankings.jsonl, demonstrations.jsonl, skips.jsonl,
    prompts.jsonl) and its agreement figures (agreement.json); returns the paths."""
    written = export_project(db, project_id, out_dir, ["jsonl"])
    agreement = write_report(db, project_id, Path(out_dir) / "agreement.json")
    return {**{what: str(path) for what, path in written.items()}, "agreement": str(agreement)}
