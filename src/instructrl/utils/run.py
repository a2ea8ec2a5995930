"""Helpers every stage's ``run`` uses: the run folder's checkpoints, guarding a resumed run, clear failures."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from instructrl.config import ConfigError, save_config, to_dict
from instructrl.utils.seed import seed_everything

#: Settings that may change between a run and its resumption.
# the number of processes too: a checkpoint holds the whole model and optimizer, whoever wrote it
RESUMABLE_CHANGES = frozenset({"run.progress", "run.resume", "run.device", "run.threads", "run.num_processes"})

_STEP_RE = re.compile(r"^step-(\d{6,})$")


def step_dir(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / f"step-{step:06d}"


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete ``step-NNNNNN/`` (one with its ``state.json``) in ``out_dir``."""
    out = Path(out_dir)
    if not out.exists():
        return None
    steps = sorted(
        (int(m.group(1)), p) for p in out.iterdir() if (m := _STEP_RE.match(p.name)) and (p / "state.json").exists()
    )
    return steps[-1][1] if steps else None


def prune_checkpoints(out_dir: str | Path, keep: int) -> None:
    """Keep the ``keep`` newest step checkpoints (0 keeps all)."""
    if keep <= 0:
        return
    out = Path(out_dir)
    steps = sorted((int(m.group(1)), p) for p in out.iterdir() if (m := _STEP_RE.match(p.name)))
    for _, p in steps[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_out_dir(
    cfg: Any, out: Path, *, resumable: frozenset[str] = RESUMABLE_CHANGES, holds: str | None = None
) -> None:
    """Refuse to resume a run in ``out`` that was started with a different config.

    ``holds`` names what a resumed run would continue (e.g. an append-only log); by default that is
    the run's checkpoints, and a folder without any has nothing to resume. ``resumable`` are the
    keys that may change between a run and its resumption."""
    saved = out / "config.yaml"
    if not saved.exists() or not cfg.run.resume:
        return
    if holds is None:
        if latest_checkpoint(out) is None and not (out / "final").exists():
            return
        holds = str(out)
    old = flatten(yaml.safe_load(saved.read_text()) or {})
    new = flatten(to_dict(cfg))
    diff = sorted(k for k in set(old) | set(new) if k not in resumable and old.get(k) != new.get(k))
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:5])
        raise ConfigError(
            f"{saved}: {holds} holds a run started with a different config ({shown}); "
            "use another run.out_dir, or run.resume=false to start over"
        )


def nonfinite_error(stage: str, step: int, out: Path) -> FloatingPointError:
    last = latest_checkpoint(out)
    where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
    return FloatingPointError(
        f"{stage}: the loss became NaN/inf at step {step + 1}; {where}. Lower optim.lr, check the data, "
        "or use run.precision=fp32."
    )


def start_run(cfg: Any, stage: str, main: bool = True) -> tuple[Path, Path | None]:
    """The common start of a stage's ``run``: returns ``(out_dir, finished)``, where ``finished`` is
    ``out_dir/final`` when a finished run is there to resume (nothing left to do). Otherwise the
    config is checked against a run being resumed, saved as ``config.yaml`` (by the ``main`` process
    of several), and the RNGs seeded."""
    out = Path(cfg.run.out_dir)
    check_out_dir(cfg, out)
    if cfg.run.resume and (out / "final" / "state.json").exists():
        logging.getLogger(f"instructrl.{stage}").info(
            "%s: %s already holds a finished run (final/); nothing to do", stage, out
        )
        return out, out / "final"
    if main:
        save_config(cfg, out)
    seed_everything(cfg.run.seed)
    if getattr(cfg.run, "threads", 0):
        import torch

        torch.set_num_threads(cfg.run.threads)
    return out, None
