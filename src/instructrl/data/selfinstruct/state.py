"""What Self-Instruct's append-only log says so far: the pool, the new tasks and the counts.

``log.jsonl`` holds one record per step; replaying it rebuilds the state exactly, which is how a
killed run resumes."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from instructrl.data.selfinstruct.novelty import NoveltyIndex
from instructrl.data.selfinstruct.tasks import Task, task_from_json
from instructrl.records import RecordError

log = logging.getLogger(__name__)


class State:
    """What the log says so far: the pool, the new tasks, and the counts."""

    def __init__(self, seeds: list[Task], threshold: float):
        self.seeds, self.tasks = seeds, []
        self.index = NoveltyIndex((t.instruction for t in seeds), threshold)
        self.seed_index = NoveltyIndex((t.instruction for t in seeds), threshold)
        self.counts: Counter = Counter()  # generated, kept, dropped/<reason>, ...
        self.instance_drops: Counter = Counter()
        self.step = 0

    def apply(self, record: dict) -> None:
        for c in record["candidates"]:
            self.counts["generated"] += 1
            if c.get("novel"):
                self.index.add(c["instruction"])
            if c.get("task"):
                self.tasks.append(task_from_json(c["task"], f"step {record['step']}"))
                self.counts["kept"] += 1
            else:
                self.counts[f"dropped/{c['drop']}"] += 1
        for k, v in record.get("extra_drops", {}).items():
            self.counts["generated"] += v
            self.counts[f"dropped/{k}"] += v
        self.counts["classification_unparsed"] += record.get("classification_unparsed", 0)
        self.instance_drops.update(record.get("instance_drops", {}))
        self.step = record["step"] + 1


def read_log(path: Path, state: State) -> None:
    """Replay ``log.jsonl`` into ``state``; a torn last line (a kill mid-write) is cut off."""
    if not path.exists():
        return
    data = path.read_bytes()
    good = data.rfind(b"\n") + 1
    if good < len(data):
        log.warning(
            "%s: dropping an incomplete last line (%d bytes) left by an interrupted run", path, len(data) - good
        )
        with open(path, "r+b") as fh:
            fh.truncate(good)
    for lineno, line in enumerate(data[:good].decode("utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecordError(f"{path}:{lineno}", None, f"not valid JSON ({e.msg}); the log is damaged") from None
        if record.get("step") != state.step:
            raise RecordError(f"{path}:{lineno}", "step", f"expected step {state.step}, got {record.get('step')!r}")
        state.apply(record)
