"""Metrics as flat ``group/name`` keys appended to ``metrics.jsonl`` (one object per logging step)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path


class MetricsLogger:
    """Append-only ``metrics.jsonl``. On resume, lines past the resumed step are dropped first."""

    def __init__(self, out_dir: str | os.PathLike, resume_step: int | None = None):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [
                ln
                for ln in self.path.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        self._t0 = time.time()

    def log(self, step: int, metrics: dict) -> None:
        row = {"step": step, "time": round(time.time() - self._t0, 3)}
        for k, v in metrics.items():
            if hasattr(v, "item"):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                v = str(v)
            row[k] = v
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
