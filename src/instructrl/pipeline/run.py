"""``instructrl run``'s entry point: every step, then the report and a table of run times."""

from __future__ import annotations

import json
import time
from importlib.util import find_spec
from pathlib import Path

from instructrl.config import save_config
from instructrl.pipeline.config import PipelineConfig
from instructrl.pipeline.engine import run_steps
from instructrl.pipeline.steps import build_steps
from instructrl.records import RecordError, atomic_write_text


def run(cfg: PipelineConfig) -> Path:
    """Run (or resume) every step; returns the path of report.md."""
    from instructrl.eval.report import write_report  # matplotlib

    check_dependencies(cfg)
    if cfg.run.threads:
        import torch

        # the steps that are not a stage (sampling for the labelers) run in this process too
        torch.set_num_threads(cfg.run.threads)
    out = Path(cfg.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    t_start = time.perf_counter()
    timings = run_steps(build_steps(cfg), out, resume=cfg.run.resume)
    atomic_write_text(out / "timings.json", json.dumps(timings, indent=2) + "\n")
    t0 = time.perf_counter()
    report = write_report(out)
    timings.append({"step": "report", "seconds": round(time.perf_counter() - t0, 2), "skipped": False})
    print_timings(timings, time.perf_counter() - t_start)
    return report


def check_dependencies(cfg: PipelineConfig) -> None:
    """Fail before the first step, not an hour in, where an optional package a step needs is missing."""
    needed = {"matplotlib": "the report", "langid": "language checks"}
    if cfg.curate.pii.action != "off":
        needed.update(dict.fromkeys(("phonenumbers", "stdnum", "pyap"), "curate's PII checks"))
    if cfg.label.panel.rubric.toxicity == "profanity-check":
        needed["profanity_check"] = "the labelers' toxicity classifier"
    if "real_toxicity_prompts" in cfg.suite.tasks and "profanity-check" in cfg.suite.real_toxicity_prompts.scorers:
        needed["profanity_check"] = "the suite's toxicity scorer"
    if "truthfulqa_gen" in cfg.suite.tasks:
        needed["rouge_score"] = "the suite's TruthfulQA generation (ROUGE-L)"
    missing = [f"{module} ({why})" for module, why in needed.items() if find_spec(module) is None]
    if missing:
        raise ImportError(f"instructrl run needs {', '.join(missing)}: pip install 'instructrl[run]'")
    check_suite_data(cfg)


def check_suite_data(cfg: PipelineConfig) -> None:
    """Every data file of the suite's tasks is there (the step reads and checks them again)."""
    suite = cfg.suite
    for task in suite.tasks:
        keys = ["data"] + (["shots_data"] if task == "gsm8k" and suite.gsm8k.shots else [])
        for key in keys:
            path = Path(getattr(getattr(suite, task), key))
            if not path.is_file():
                raise RecordError(
                    str(path),
                    None,
                    f"file not found (set suite.{task}.{key} to the data file, or leave {task} out of suite.tasks; "
                    f"the public data sets are expected in ../shared/data beside the project, paths from {Path.cwd()})",
                )


def print_timings(timings: list[dict], wall: float) -> None:
    width = max(len(t["step"]) for t in timings)
    lines = [f"{'step'.ljust(width)}  seconds", f"{'-' * width}  -------"]
    for t in timings:
        skipped = "  (done before, skipped)" if t["skipped"] else ""
        lines.append(f"{t['step'].ljust(width)}  {t['seconds']:7.1f}{skipped}")
    lines.append(f"{'total'.ljust(width)}  {sum(t['seconds'] for t in timings):7.1f}  (this run: {wall:.1f} s)")
    print("\n".join(lines))
