"""Helpers every stage's ``run`` uses: guarding an output directory, clear failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from instructrl.config import ConfigError, to_dict
from instructrl.models.checkpoint import latest_checkpoint

#: Settings that may change between a run and its resumption.
RESUMABLE_CHANGES = {"run.progress", "run.resume", "run.device", "run.threads"}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_out_dir(cfg: Any, out: Path) -> None:
    """Refuse to resume (or skip) a run in ``out`` that was started with a different config."""
    saved = out / "config.yaml"
    if not saved.exists() or not cfg.run.resume:
        return
    if latest_checkpoint(out) is None and not (out / "final").exists():
        return
    old = _flatten(yaml.safe_load(saved.read_text()) or {})
    new = _flatten(to_dict(cfg))
    diff = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:5])
        raise ConfigError(
            f"{saved}: {out} holds a run started with a different config ({shown}); "
            "use another run.out_dir, or run.resume=false to start over"
        )


def nonfinite_error(stage: str, step: int, out: Path) -> FloatingPointError:
    last = latest_checkpoint(out)
    where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
    return FloatingPointError(
        f"{stage}: the loss became NaN/inf at step {step + 1}; {where}. Lower optim.lr, check the data, "
        "or use run.precision=fp32."
    )


def start_run(cfg: Any, stage: str) -> tuple[Path, Path | None]:
    """The common start of a stage's ``run``: returns ``(out_dir, finished)``, where ``finished`` is
    ``out_dir/final`` when a finished run is there to resume (nothing left to do). Otherwise the
    config is checked against a run being resumed, saved as ``config.yaml``, and the RNGs seeded."""
    import logging

    from instructrl.config import save_config
    from instructrl.utils.seed import seed_everything

    out = Path(cfg.run.out_dir)
    check_out_dir(cfg, out)
    if cfg.run.resume and (out / "final" / "state.json").exists():
        logging.getLogger(f"instructrl.{stage}").info("%s: %s already holds a finished run (final/); nothing to do",
                                                      stage, out)
        return out, out / "final"
    save_config(cfg, out)
    seed_everything(cfg.run.seed)
    if getattr(cfg.run, "threads", 0):
        import torch

        torch.set_num_threads(cfg.run.threads)
    return out, None
