"""Tasks in the Self-Instruct format, reading and checking them, and turning them into demonstrations.

A task is one JSON object per line::

    {"id": "...", "name": "...", "instruction": "...", "is_classification": false,
     "instances": [{"input": "...", "output": "..."}, ...]}

``input`` may be empty (the instruction is the whole prompt). Other keys are kept in ``meta``.
"""

from __future__ import annotations

import dataclasses
import os

from instructrl.builtin import resolve
from instructrl.records import Demonstration, RecordError, iter_json_lines

REQUIRED = ("instruction", "instances", "is_classification")


@dataclasses.dataclass
class Instance:
    input: str
    output: str


@dataclasses.dataclass
class Task:
    instruction: str
    instances: list[Instance]
    is_classification: bool
    id: str = ""
    name: str = ""
    meta: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        out = {
            "id": self.id,
            "name": self.name,
            "instruction": self.instruction,
            "instances": [dataclasses.asdict(i) for i in self.instances],
            "is_classification": self.is_classification,
        }
        if self.meta:
            out["meta"] = self.meta
        return out


def task_from_json(obj: object, where: str) -> Task:
    """Build a task, failing with ``where: field 'x': reason`` on bad input."""
    if not isinstance(obj, dict):
        raise RecordError(where, None, f"expected a JSON object, got {type(obj).__name__}")
    for key in REQUIRED:
        if key not in obj:
            raise RecordError(where, key, "missing")
    if not isinstance(obj["instruction"], str) or not obj["instruction"].strip():
        raise RecordError(where, "instruction", "expected a non-empty string")
    if not isinstance(obj["is_classification"], bool):
        raise RecordError(where, "is_classification", f"expected true or false, got {obj['is_classification']!r}")
    raw = obj["instances"]
    if not isinstance(raw, list) or not raw:
        raise RecordError(where, "instances", "expected a non-empty list of {input, output} objects")
    instances = []
    for k, inst in enumerate(raw):
        if (
            not isinstance(inst, dict)
            or not isinstance(inst.get("input"), str)
            or not isinstance(inst.get("output"), str)
        ):
            raise RecordError(where, f"instances[{k}]", "expected an object with string 'input' and 'output'")
        instances.append(Instance(inst["input"], inst["output"]))
    for key in ("id", "name"):
        if key in obj and not isinstance(obj[key], str):
            raise RecordError(where, key, f"expected a string, got {obj[key]!r}")
    meta = dict(obj.get("meta") or {})
    meta.update({k: v for k, v in obj.items() if k not in (*REQUIRED, "id", "name", "meta")})
    return Task(
        instruction=obj["instruction"],
        instances=instances,
        is_classification=obj["is_classification"],
        id=obj.get("id", ""),
        name=obj.get("name", ""),
        meta=meta,
    )


def load_tasks(path: str | os.PathLike | None = None) -> list[Task]:
    """Read tasks from ``path`` (default: the packaged seed set); ids default to ``seed_<line>``."""
    path = resolve(path if path is not None else "builtin:seeds")
    tasks = []
    for lineno, obj in iter_json_lines(path):
        task = task_from_json(obj, f"{path}:{lineno}")
        task.id = task.id or f"seed_{lineno}"
        tasks.append(task)
    if not tasks:
        raise RecordError(str(path), None, "no tasks in the file")
    return tasks


def instance_prompt(instruction: str, input: str) -> str:
    """The prompt a task instance becomes: the instruction, then the input after a blank line."""
    return f"{instruction.strip()}\n\n{input.strip()}" if input.strip() else instruction.strip()


def to_demonstrations(tasks: list[Task]) -> list[Demonstration]:
    """One SFT-ready demonstration per instance."""
    demos = []
    for task in tasks:
        for k, inst in enumerate(task.instances):
            demos.append(
                Demonstration(
                    prompt=instance_prompt(task.instruction, inst.input),
                    response=inst.output.strip(),
                    id=f"{task.id}-{k}",
                    source="selfinstruct",
                    category="classification" if task.is_classification else None,
                    meta={"task_id": task.id, "instance": k},
                )
            )
    return demos
