"""Import: a samples JSONL -> rate-and-rank tasks, a prompts JSONL -> write-a-demonstration tasks, each
given to labelers with a configurable overlap; and write-a-prompt work (:func:`create_prompt_tasks`), which
comes from no file: N tasks per labeler, of the paper's three kinds (plain, few-shot, user-based).

The whole file is read and checked before anything is written, and everything is written in one
transaction: a bad line (with its file and line in the message) leaves the database as it was.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from instructrl.label.workbench.schema import K_MAX, K_MIN, PROMPT_KINDS, display_order
from instructrl.records import Prompt, RecordError, Sample, from_dict, iter_json_lines, prompt_text, require_records
from instructrl.utils.seed import derive
from instructrl.web.db import InputError
from instructrl.web.models import Assignment, InstructionVersion, Organization, Project, Task, User


@dataclasses.dataclass
class Item:
    """One task to create: a prompt, and for a ranking its responses (``{"text", "policy", "sample_id",
    "finish_reason"}``)."""

    prompt: Any
    external_id: str
    responses: list[dict] | None
    meta: dict
    where: str  # file:line of the item's first record


@dataclasses.dataclass
class ImportSummary:
    project_id: int
    project: str
    tasks: int
    assignments: int
    labelers: int
    instruction_version: int | None

    def __str__(self) -> str:
        return (
            f"imported {self.tasks} tasks into project {self.project!r} as {self.assignments} assignments "
            f"for {self.labelers} labelers"
        )


def _json_lines(path: str | os.PathLike, shown: str) -> Iterator[tuple[int, Any]]:
    """``iter_json_lines`` with errors naming the file as ``shown`` (an upload's own name, not the
    temporary file it was saved to)."""
    try:
        yield from iter_json_lines(path)
    except RecordError as e:
        raise RecordError(e.where.replace(str(path), shown, 1), e.field, e.reason) from None


def read_rank_items(path: str | os.PathLike, name: str | None = None) -> list[Item]:
    """Sample records grouped into one item per prompt (``meta.prompt_id``, else the prompt itself), in the
    order the prompts first appear. ``name`` is how the file is called in messages (default: its path)."""
    shown = name or str(path)
    groups: dict[str, Item] = {}
    lines: dict[str, list[int]] = {}
    for lineno, obj in _json_lines(path, shown):
        where = f"{shown}:{lineno}"
        sample = from_dict(Sample, obj, where)
        key = str(sample.meta.get("prompt_id") or prompt_text(sample.prompt))
        item = groups.get(key)
        if item is None:
            meta = {k: sample.meta[k] for k in ("category", "user_id", "type") if k in sample.meta}
            item = groups[key] = Item(sample.prompt, str(sample.meta.get("prompt_id") or ""), [], meta, where)
            lines[key] = []
        elif sample.prompt != item.prompt:
            raise RecordError(
                where, "prompt", f"differs from the prompt of {item.where} although both have prompt_id {key!r}"
            )
        response = {"text": sample.response, "policy": sample.policy, "sample_id": sample.id}
        item.responses.append(response | {"finish_reason": sample.finish_reason})
        lines[key].append(lineno)
        if len(item.responses) > K_MAX:
            raise RecordError(
                where,
                None,
                f"prompt {_label(key)} has more than {K_MAX} responses (lines {', '.join(map(str, lines[key]))}); "
                f"a rate-and-rank task shows {K_MIN} to {K_MAX}: split them over several prompt ids",
            )
    require_records(list(groups), shown, "samples")
    for key, item in groups.items():
        if len(item.responses) < K_MIN:
            raise RecordError(
                item.where,
                None,
                f"prompt {_label(key)} has only {len(item.responses)} response; a rate-and-rank task needs "
                f"{K_MIN} to {K_MAX} responses for one prompt",
            )
    return list(groups.values())


def read_demonstration_items(path: str | os.PathLike, name: str | None = None) -> list[Item]:
    """Prompt records, one write-a-demonstration item each."""
    shown = name or str(path)
    items = []
    for lineno, obj in _json_lines(path, shown):
        prompt = from_dict(Prompt, obj, f"{shown}:{lineno}")
        meta = {"type": prompt.type, "user_id": prompt.user_id}
        if prompt.category:
            meta["category"] = prompt.category
        items.append(Item(prompt.prompt, prompt.id, None, meta, f"{shown}:{lineno}"))
    return require_records(items, shown, "prompts")


def _label(key: str) -> str:
    return repr(key if len(key) <= 60 else key[:57] + "...")


def plan_assignments(
    n_items: int, labelers: Sequence[int], overlap: float, per_item: int, seed: int
) -> list[list[int]]:
    """For each item, the labelers it goes to.

    ``round(overlap * n_items)`` items, drawn by ``seed``, go to ``per_item`` distinct labelers, the rest
    to one. Each item goes to the labelers with the least work so far (ties broken by a seeded order of
    the labelers), so work spreads evenly: every labeler ends within one item of every other."""
    if not labelers:
        raise InputError("no labelers to give the tasks to")
    shared_count = round(overlap * n_items)
    if shared_count and per_item > len(labelers):
        raise InputError(f"labelers_per_item={per_item} but only {len(labelers)} labelers: lower it or add labelers")
    rng = random.Random(derive(seed, "overlap"))
    shared = set(rng.sample(range(n_items), shared_count))
    tiebreak = {
        user: rank for rank, user in enumerate(random.Random(derive(seed, "labelers")).sample(labelers, len(labelers)))
    }
    load = dict.fromkeys(labelers, 0)
    plan = []
    for item in range(n_items):
        count = per_item if item in shared else 1
        chosen = sorted(labelers, key=lambda user: (load[user], tiebreak[user]))[:count]
        for user in chosen:
            load[user] += 1
        plan.append(chosen)
    return plan


def _labeler_ids(session: Session, org_id: int, names: Sequence[str]) -> list[int]:
    if not names:
        ids = list(
            session.scalars(
                select(User.id)
                .where(User.org_id == org_id, User.role == "labeler", User.active.is_(True))
                .order_by(User.id)
            )
        )
        if not ids:
            raise InputError(
                "the organization has no active labelers: add some on /admin/users or with "
                "instructrl label admin create-user role=labeler"
            )
        return ids
    ids = []
    for name in names:
        user_id = session.scalar(
            select(User.id).where(User.org_id == org_id, User.username == name.strip().lower(), User.active.is_(True))
        )
        if user_id is None:
            raise InputError(f"no active user {name!r} in this organization")
        ids.append(user_id)
    return ids


def publish_instructions(
    session: Session, project_id: int, text: str, user_id: int | None
) -> InstructionVersion | None:
    """A new version of the project's instructions, unless ``text`` is what the newest version says."""
    text = text.replace("\r\n", "\n").strip()
    latest = session.scalar(
        select(InstructionVersion)
        .where(InstructionVersion.project_id == project_id)
        .order_by(InstructionVersion.version.desc())
        .limit(1)
    )
    if not text or (latest is not None and latest.text == text):
        return latest
    version = InstructionVersion(
        project_id=project_id, version=(latest.version + 1) if latest else 1, text=text, created_by=user_id
    )
    session.add(version)
    session.flush()
    return version


def project_in_org(session: Session, org_name: str, project: str, create_priority: str | None = None) -> Project:
    """The project ``project`` of organization ``org_name``; created when ``create_priority`` is given."""
    org = session.scalar(select(Organization).where(Organization.name == org_name))
    if org is None:
        raise InputError(
            f"no organization {org_name!r}: create its first user with "
            f"instructrl label admin create-user username=NAME org={org_name}"
        )
    found = session.scalar(select(Project).where(Project.org_id == org.id, Project.name == project.strip()))
    if found is None and create_priority is None:
        raise InputError(f"no project {project!r} in organization {org_name!r}")
    if found is None:
        found = Project(org_id=org.id, name=project.strip()[:200], description="", priority=create_priority)
        session.add(found)
        session.flush()
    return found


def import_items(
    session: Session,
    project_id: int,
    kind: str,
    items: Sequence[Item],
    *,
    labelers: Sequence[str] = (),
    overlap: float = 0.0,
    per_item: int = 2,
    seed: int = 0,
) -> ImportSummary:
    """Create the tasks and their assignments in ``session`` (the caller's one write transaction)."""
    project = session.get(Project, project_id)
    user_ids = _labeler_ids(session, project.org_id, labelers)
    plan = plan_assignments(len(items), user_ids, overlap, per_item, seed)
    # seeds differ between imports into one project, so that a second batch is not shuffled like the first
    batch = session.scalar(select(func.count()).select_from(Task).where(Task.project_id == project_id))
    tasks = [
        Task(
            project_id=project_id,
            kind=kind,
            external_id=item.external_id[:200],
            prompt=item.prompt,
            responses=item.responses,
            meta=item.meta,
        )
        for item in items
    ]
    session.add_all(tasks)
    session.flush()
    assignments = 0
    for position, (task, users) in enumerate(zip(tasks, plan)):
        for user_id in users:
            order = None
            if task.responses is not None:
                order = display_order(len(task.responses), derive(seed, "order", batch + position, user_id))
            session.add(Assignment(task_id=task.id, user_id=user_id, status="open", order=order))
            assignments += 1
    session.flush()
    latest = session.scalar(
        select(func.max(InstructionVersion.version)).where(InstructionVersion.project_id == project_id)
    )
    return ImportSummary(project_id, project.name, len(tasks), assignments, len(user_ids), latest)


MAX_USE_CASE = 500  # characters of one use case


def prompt_brief(prompt_type: str, use_case: str | None) -> str:
    """What a write-a-prompt task asks for, in words (its ``prompt``, shown in queues and skips)."""
    if prompt_type == "user-based":
        return f"Write a prompt for this use case: {use_case}"
    return f"Write a {prompt_type} prompt"


def clean_use_cases(text_or_list: str | Sequence[str]) -> list[str]:
    """Use cases one per line (or a list), stripped, blank ones and repeats dropped, in their order."""
    lines = text_or_list.splitlines() if isinstance(text_or_list, str) else list(text_or_list)
    out = []
    for line in lines:
        line = line.strip()
        if len(line) > MAX_USE_CASE:
            raise InputError(f"a use case is longer than {MAX_USE_CASE} characters: {line[:40]!r}...")
        if line and line not in out:
            out.append(line)
    return out


def create_prompt_tasks(
    session: Session,
    project_id: int,
    *,
    per_labeler: int,
    prompt_types: Sequence[str],
    use_cases: Sequence[str] = (),
    labelers: Sequence[str] = (),
    seed: int = 0,
) -> ImportSummary:
    """``per_labeler`` write-a-prompt tasks for each labeler (every active labeler of the organization when
    ``labelers`` is empty), in the caller's one write transaction. Each labeler's tasks cycle through
    ``prompt_types``; a user-based task carries one of ``use_cases`` (the project's list, dealt in a seeded
    order so that labelers get different ones), which the labeler writes a prompt for."""
    if not 1 <= per_labeler <= 1000:
        raise InputError("prompts per labeler must be from 1 to 1000")
    unknown = [t for t in prompt_types if t not in PROMPT_KINDS]
    if not prompt_types or unknown:
        raise InputError(f"kinds of prompt are {', '.join(PROMPT_KINDS)}; got {', '.join(unknown) or 'none'}")
    use_cases = clean_use_cases(use_cases)
    if "user-based" in prompt_types and not use_cases:
        raise InputError("user-based prompts need the project's use cases: list at least one")
    project = session.get(Project, project_id)
    user_ids = _labeler_ids(session, project.org_id, labelers)
    dealt = random.Random(derive(seed, "use_cases")).sample(use_cases, len(use_cases))
    tasks: list[tuple[Task, int]] = []
    user_based = 0
    for user_id in user_ids:
        for n in range(per_labeler):
            prompt_type = prompt_types[n % len(prompt_types)]
            meta: dict[str, Any] = {"prompt_type": prompt_type}
            if prompt_type == "user-based":
                meta["use_case"] = dealt[user_based % len(dealt)]
                user_based += 1
            task = Task(
                project_id=project_id,
                kind="write_prompt",
                external_id="",
                prompt=prompt_brief(prompt_type, meta.get("use_case")),
                responses=None,
                meta=meta,
            )
            tasks.append((task, user_id))
    session.add_all([task for task, _ in tasks])
    session.flush()
    session.add_all([Assignment(task_id=task.id, user_id=user_id, status="open") for task, user_id in tasks])
    session.flush()
    latest = session.scalar(
        select(func.max(InstructionVersion.version)).where(InstructionVersion.project_id == project_id)
    )
    return ImportSummary(project_id, project.name, len(tasks), len(tasks), len(user_ids), latest)
