"""Run named steps in order, each in its own folder, skipping what is done and redoing what changed.

A step that finished writes ``<step>/pipeline.json`` with its fingerprint, run time and facts. A
fingerprint hashes what the step's output depends on (its spec) chained with the previous step's
fingerprint, so a change redoes its step and every later one, and nothing before it. A step whose
marker says "running" was interrupted: it runs again in the same folder, where a stage finds its
checkpoints and resumes. Knows no stage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructrl.config import to_dict
from instructrl.records import atomic_write_text

log = logging.getLogger("instructrl.run")

MARKER = "pipeline.json"
#: run.* keys that change how a step is shown, resumed or how fast it runs, never what it writes
NOT_FINGERPRINTED = ("progress", "resume", "device", "threads")


@dataclass
class Step:
    name: str
    spec: dict[str, Any]  # everything the step's output depends on (configs, paths, seeds)
    execute: Callable[[], dict]  # does the work; returns facts for the marker and the report
    after: str | None = None  # the earlier step whose fingerprint this one chains to (None: the one before)


def fingerprint(spec: dict[str, Any], previous: str) -> str:
    def plain(x: Any) -> Any:
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            d = to_dict(x)
            if isinstance(d.get("run"), dict):
                for key in NOT_FINGERPRINTED:
                    d["run"].pop(key, None)
            return d
        return x

    text = json.dumps({k: plain(v) for k, v in spec.items()}, sort_keys=True, default=str)
    return hashlib.sha256((previous + text).encode()).hexdigest()[:16]


def run_steps(steps: list[Step], out: Path, *, resume: bool) -> list[dict]:
    """Run every step under ``out``; returns ``{step, seconds, skipped}`` per step.

    ``resume=False`` redoes every step from an empty folder."""
    timings: list[dict] = []
    previous = ""
    fps: dict[str, str] = {}  # step -> fingerprint, of the steps before this one
    for i, step in enumerate(steps, 1):
        if step.after is not None and step.after not in fps:
            raise ValueError(f"run: step {step.name!r} follows {step.after!r}, which is not an earlier step")
        fp = fingerprint(step.spec, fps[step.after] if step.after is not None else previous)
        previous = fps[step.name] = fp
        folder = out / step.name
        marker = folder / MARKER
        state = json.loads(marker.read_text()) if marker.exists() else None
        if state and state.get("fingerprint") != fp:
            if resume:
                log.warning(
                    "run: %s was made with another config (or after other earlier steps); doing it again", folder
                )
            shutil.rmtree(folder)
            state = None
        if resume and state and state.get("status") == "done":
            log.info("run: [%d/%d] %s: done before (%.1f s), skipped", i, len(steps), step.name, state["seconds"])
            timings.append({"step": step.name, "seconds": state["seconds"], "skipped": True})
            continue
        if not resume and folder.exists():
            shutil.rmtree(folder)
        log.info("run: [%d/%d] %s%s", i, len(steps), step.name, " (resuming)" if state else "")
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, json.dumps({"status": "running", "fingerprint": fp}) + "\n")
        t0 = time.perf_counter()
        info = step.execute()
        seconds = round(time.perf_counter() - t0, 2)
        atomic_write_text(
            marker,
            json.dumps({"status": "done", "fingerprint": fp, "seconds": seconds, "info": info}, indent=2, default=str)
            + "\n",
        )
        timings.append({"step": step.name, "seconds": seconds, "skipped": False})
    return timings
