"""Run every task on every policy, resumably, and write one results table.

Layout under the evaluation's ``out_dir``::

    tasks/<policy>/<task>.json           one (policy, task) result: rows, seconds, fingerprint, versions
    tasks/<policy>/.<task>-<fp>/         the task's intermediate outputs (removed once the result is written)
    tasks/<task>.reference.json          rows that depend on the data alone (e.g. a scorer's rank correlation)
    task_results.json, task_results.md   every row of the run's policies and tasks, one table

Each result file is written atomically when its task finishes. A re-run (``run.resume``) skips a
(policy, task) whose file holds the same fingerprint: the model, the task's settings (data
checksum, sample, modes, seed...) and the evaluation's dtype and precision; a different
fingerprint is evaluated again. So a killed evaluation resumes at the first unfinished pair. A
policy whose model and settings match another's (``base`` and the few-shot-prompted ``base`` of the
preference evaluation: tasks do not use that prefix) reuses that result (``reused_from``).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import platform
import shutil
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from instructrl.eval.config import EvalConfig, PolicySpec
from instructrl.eval.tasks import Row, Task
from instructrl.records import atomic_write_text

log = logging.getLogger("instructrl.eval")

RESULTS_JSON = "task_results.json"
RESULTS_MD = "task_results.md"


def build_tasks(cfg: EvalConfig) -> list[Task]:
    """The configured tasks other than ``preference``, in the config's order (data not read yet)."""
    from instructrl.eval.tasks.gsm8k import GSM8KTask
    from instructrl.eval.tasks.hella_swag import HellaSwagTask
    from instructrl.eval.tasks.toxicity import ToxicityTask
    from instructrl.eval.tasks.truthful_qa import TruthfulQATask
    from instructrl.eval.tasks.truthful_qa_gen import TruthfulQAGenTask

    common = {"seed": cfg.run.seed, "bootstrap": cfg.bootstrap, "confidence": cfg.confidence}
    makers = {
        "truthfulqa": lambda: TruthfulQATask(cfg.truthfulqa, **common),
        "truthfulqa_gen": lambda: TruthfulQAGenTask(cfg.truthfulqa_gen, **common),
        "hellaswag": lambda: HellaSwagTask(cfg.hellaswag, **common),
        "real_toxicity_prompts": lambda: ToxicityTask(cfg.real_toxicity_prompts, **common),
        "gsm8k": lambda: GSM8KTask(cfg.gsm8k, **common),
    }
    return [makers[name]() for name in cfg.tasks if name != "preference"]


def versions() -> dict[str, str]:
    """Versions of what the figures depend on."""
    out = {"python": platform.python_version()}
    for pkg in ("instructrl", "torch", "transformers", "numpy", "alt-profanity-check"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def fingerprint(cfg: EvalConfig, spec: PolicySpec | None, task: Task) -> str:
    """What a (policy, task) result depends on, hashed."""
    key: dict[str, Any] = {"task": task.name, "settings": task.settings()}
    if spec is not None:
        key.update(model=spec.model, dtype=cfg.dtype, precision=cfg.run.precision)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _finished(path: Path, fp: str, resume: bool) -> bool:
    if not (resume and path.exists()):
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("fingerprint") == fp
    except (OSError, json.JSONDecodeError):
        return False  # a damaged file is evaluated again


def _same_work(root: Path, task: Task, fp: str, among: set[Path] | None) -> Path | None:
    """A result of another policy with the same fingerprint (the same model and settings: e.g. a
    policy that differs only in the preference evaluation's few-shot prefix), which can be reused;
    ``among``: only these files (None: any in ``root``)."""
    for path in sorted(root.glob(f"*/{task.name}.json")):
        if (among is None or path in among) and _finished(path, fp, True):
            return path
    return None


def _write(path: Path, policy: str, model: str, task: Task, fp: str, rows: list[Row], seconds: float) -> None:
    payload = {
        "policy": policy,
        "model": model,
        "task": task.name,
        "fingerprint": fp,
        "seconds": round(seconds, 3),
        "versions": versions(),
        "settings": task.settings(),
        "rows": [r.to_dict() for r in rows],
    }
    atomic_write_text(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def run_tasks(cfg: EvalConfig, tasks: list[Task], out: Path) -> Path:
    """Evaluate ``tasks`` (already loaded) on every policy; returns the path of the results JSON."""
    from instructrl.eval.tasks.lm import HFLanguageModel

    root = out / "tasks"
    for task in tasks:  # rows of the data alone (no model): computed once
        path, fp = root / f"{task.name}.reference.json", fingerprint(cfg, None, task)
        if not _finished(path, fp, cfg.run.resume):
            start = time.perf_counter()
            rows = task.reference()
            if rows:
                _write(path, "", "", task, fp, rows, time.perf_counter() - start)
    written: set[Path] = set()  # result files of this run
    for spec in cfg.policies:
        pending = []
        for task in tasks:
            path, fp = root / spec.name / f"{task.name}.json", fingerprint(cfg, spec, task)
            if _finished(path, fp, cfg.run.resume):
                log.info("eval: %s on %s already done (%s)", task.name, spec.name, path)
            elif (same := _same_work(root, task, fp, None if cfg.run.resume else written)) is not None:
                log.info("eval: %s on %s is the same work as %s; reusing it", task.name, spec.name, same)
                payload = json.loads(same.read_text(encoding="utf-8"))
                payload.update(policy=spec.name, reused_from=str(same))
                atomic_write_text(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
            else:
                pending.append((task, path, fp))
        if not pending:
            continue
        lm = HFLanguageModel.load(
            spec.model,
            device=cfg.run.device,
            dtype=cfg.dtype,
            precision=cfg.run.precision,
            batch_size=cfg.batch_size,
            forward_batch_size=cfg.forward_batch_size,
            engine=cfg.engine,
            progress=cfg.run.progress,
        )
        for task, path, fp in pending:
            log.info("eval: %s on %s (%s)", task.name, spec.name, spec.model)
            scratch = root / spec.name / f".{task.name}-{fp}"
            start = time.perf_counter()
            rows = task.evaluate(lm, scratch)
            _write(path, spec.name, spec.model, task, fp, rows, time.perf_counter() - start)
            written.add(path)
            shutil.rmtree(scratch, ignore_errors=True)
        del lm
        gc.collect()
    return write_table(cfg, tasks, out)


def collect_rows(cfg: EvalConfig, tasks: list[Task], out: Path) -> list[dict]:
    """Every row of the run's policies and tasks, policy and seconds added, in config order."""
    rows = []
    root = out / "tasks"
    for task in tasks:
        path = root / f"{task.name}.reference.json"
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            rows += [{"policy": "", "model": "", **r, "seconds": data["seconds"]} for r in data["rows"]]
    for spec in cfg.policies:
        for task in tasks:
            data = json.loads((root / spec.name / f"{task.name}.json").read_text(encoding="utf-8"))
            rows += [{"policy": spec.name, "model": spec.model, **r, "seconds": data["seconds"]} for r in data["rows"]]
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table (seconds: the whole (policy, task) evaluation's time)."""
    head = "| policy | task | metric | scorer | prompt mode | n | value | 95% interval | sample | seconds |"
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        lines.append(
            f"| {r['policy'] or '(data)'} | {r['task']} | {r['metric']} | {r['scorer']} | {r['prompt_mode']} | "
            f"{r['n']} | {r['value']:.4f} | [{r['low']:.4f}, {r['high']:.4f}] | {r['sample']} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def write_table(cfg: EvalConfig, tasks: list[Task], out: Path) -> Path:
    rows = collect_rows(cfg, tasks, out)
    payload = {"confidence": cfg.confidence, "bootstrap": cfg.bootstrap, "versions": versions(), "rows": rows}
    path = atomic_write_text(out / RESULTS_JSON, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    title = f"# Task results\n\nValues with {cfg.confidence:.0%} bootstrap intervals over items; versions: "
    title += ", ".join(f"{k} {v}" for k, v in payload["versions"].items()) + ".\n\n"
    atomic_write_text(out / RESULTS_MD, title + markdown_table(rows))
    return path
